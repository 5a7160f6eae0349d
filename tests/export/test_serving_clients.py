"""TF Serving clients, checked without a TF Serving binary: gRPC `PredictRequest` protos of
`tensorflow-serving-api` (serialized as they go over the wire) and REST bodies, for each
signature, run on the SavedModel by the local stand-ins `export.grpc_predict` /
`export.rest_predict`, give the model's outputs. The requests are those of docs/export.md.
"""

import base64
import importlib.util
import json

import numpy as np
import pytest
import tensorflow as tf

from tl_keras import data, export

# One worker runs the tests of the session fixture `exported` (conftest.py) and of this
# module's fixtures: each is built once.
pytestmark = [pytest.mark.tf_only, pytest.mark.xdist_group("exported")]

needs_serving_api = pytest.mark.skipif(
    importlib.util.find_spec("tensorflow_serving") is None,
    reason="tensorflow-serving-api not installed (pip install 'tl_keras[deploy]')",
)


@pytest.fixture(scope="module")
def loaded(exported):
    return {
        "image": tf.saved_model.load(exported.image.path),
        "video": tf.saved_model.load(exported.video.path),
    }


def _pixels(shape, seed):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _requests(kind):
    """Per signature: (input name, the input array, the pixels it decodes to or None)."""
    if kind == "image":
        pixels = _pixels((2, 45, 38, 3), seed=5)
        png = np.array([tf.io.encode_png(p).numpy() for p in pixels], dtype=object)
        return {
            "serving_default": ("images", pixels.astype(np.float32), pixels),
            "serve_uint8": ("images", pixels, pixels),
            "serve_encoded": ("encoded_images", png, pixels),  # PNG: lossless
        }
    pixels = _pixels((2, 4, 36, 48, 3), seed=6)
    jpeg = np.array([[tf.io.encode_jpeg(f).numpy() for f in clip] for clip in pixels], dtype=object)
    return {
        "serving_default": ("videos", pixels.astype(np.float32), pixels),
        "serve_uint8": ("videos", pixels, pixels),
        "serve_encoded": ("encoded_videos", jpeg, None),  # JPEG: lossy
    }


def _keras_logits(case, pixels):
    return np.asarray(case.model(data.preprocess(pixels, case.prep), training=False))


@needs_serving_api
@pytest.mark.parametrize("kind", ["image", "video"])
def test_grpc_predict_request_every_signature(exported, loaded, kind):
    from tensorflow_serving.apis import predict_pb2

    case = getattr(exported, kind)
    for signature, (name, array, pixels) in _requests(kind).items():
        # The client side, as docs/export.md writes it.
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "tl_keras"
        request.model_spec.signature_name = signature
        request.inputs[name].CopyFrom(tf.make_tensor_proto(array))
        wire = request.SerializeToString()
        response = predict_pb2.PredictResponse.FromString(
            export.grpc_predict(loaded[kind], wire).SerializeToString()
        )
        assert response.model_spec.signature_name == signature
        outputs = {k: tf.make_ndarray(v) for k, v in response.outputs.items()}
        direct = {k: v.numpy() for k, v in
                  loaded[kind].signatures[signature](**{name: tf.constant(array)}).items()}
        assert sorted(outputs) == sorted(direct) == [
            "logits", "probabilities", "top_k_indices", "top_k_labels"]
        for key in direct:
            np.testing.assert_array_equal(outputs[key], direct[key], err_msg=f"{signature} {key}")
        assert outputs["logits"].shape == (2, case.model.outputs[0].shape[-1])
        if pixels is not None:
            np.testing.assert_allclose(outputs["logits"], _keras_logits(case, pixels),
                                       atol=1e-5, err_msg=signature)
        if case.classes:
            assert outputs["top_k_labels"][0, 0].decode() in case.classes


@needs_serving_api
def test_grpc_output_filter_default_signature_and_errors(exported, loaded):
    from tensorflow_serving.apis import predict_pb2

    _, array, pixels = _requests("image")["serve_uint8"]
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "tl_keras"  # no signature_name: serving_default
    request.inputs["images"].CopyFrom(tf.make_tensor_proto(array.astype(np.float32)))
    request.output_filter.append("logits")
    response = export.grpc_predict(loaded["image"], request)
    assert response.model_spec.signature_name == "serving_default"
    assert list(response.outputs) == ["logits"]
    np.testing.assert_allclose(tf.make_ndarray(response.outputs["logits"]),
                               _keras_logits(exported.image, pixels), atol=1e-5)
    wrong_dtype = predict_pb2.PredictRequest()
    wrong_dtype.model_spec.signature_name = "serve_uint8"
    wrong_dtype.inputs["images"].CopyFrom(tf.make_tensor_proto(array.astype(np.float32)))
    with pytest.raises(ValueError, match="'images' of serve_uint8 must be uint8; got float32"):
        export.grpc_predict(loaded["image"], wrong_dtype)
    wrong_name = predict_pb2.PredictRequest()
    wrong_name.inputs["pixels"].CopyFrom(tf.make_tensor_proto(array))
    with pytest.raises(ValueError, match=r"takes inputs \['images'\]; the request has \['pixels'\]"):
        export.grpc_predict(loaded["image"], wrong_name)
    wrong_signature = predict_pb2.PredictRequest()
    wrong_signature.model_spec.signature_name = "serve"
    with pytest.raises(ValueError, match="no signature 'serve'"):
        export.grpc_predict(loaded["image"], wrong_signature)


def test_rest_columnar_inputs_body(exported, loaded):
    """`{"signature_name": ..., "inputs": {...}}` (columnar) gives `{"outputs": {...}}` with the
    model's logits; bytes as `{"b64": ...}`."""
    for signature, (name, array, pixels) in _requests("image").items():
        if array.dtype == object:
            value = [{"b64": base64.b64encode(v).decode()} for v in array]
        else:
            value = array.tolist()
        body = json.dumps({"signature_name": signature, "inputs": {name: value}})
        response = export.rest_predict(loaded["image"].signatures[signature], body)
        logits = np.asarray(response["outputs"]["logits"])
        np.testing.assert_allclose(logits, _keras_logits(exported.image, pixels), atol=1e-5,
                                   err_msg=signature)
        assert np.asarray(response["outputs"]["top_k_labels"]).shape == (2, exported.image.k)


def _doc_json_blocks():
    """The ```json blocks of docs/export.md."""
    import os
    import re

    path = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "export.md")
    with open(path) as f:
        return [json.loads(b) for b in re.findall(r"```json\n(.*?)\n```", f.read(), re.S)]


def test_the_documented_rest_bodies(exported, loaded):
    """docs/export.md's REST bodies, run as written: the row and the columnar body give the
    same logits, those of the Keras model on the same pixels."""
    bodies = _doc_json_blocks()
    assert [("instances" in b, "inputs" in b) for b in bodies] == [(True, False), (False, True)]
    logits = []
    for body in bodies:
        signature = loaded["image"].signatures[body["signature_name"]]
        response = export.rest_predict(signature, json.dumps(body))
        if "instances" in body:
            pixels = np.asarray(body["instances"], np.uint8)
            logits.append(np.asarray([row["logits"] for row in response["predictions"]]))
        else:
            pixels = np.asarray(body["inputs"]["images"], np.uint8)
            logits.append(np.asarray(response["outputs"]["logits"]))
        np.testing.assert_allclose(logits[-1], _keras_logits(exported.image, pixels), atol=1e-5)
    np.testing.assert_array_equal(logits[0], logits[1])
