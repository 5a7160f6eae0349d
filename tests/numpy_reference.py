"""Independent NumPy implementations of the reference (Scenic) TokenLearner modules.

Written from the paper and the reference's published semantics, in float64, with
explicit loops over frames; they share no code with tl_keras. Parameters use the
reference's names (a Flax-style nested dict), so the same tree can be loaded into the
Keras layers with `tl_keras.convert.load_flax_params`.
"""

import math

import numpy as np

EPS = 1e-6


def layer_norm(x, p):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + EPS) * p["scale"] + p["bias"]


def gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def dense(x, p):
    return x @ p["kernel"] + p.get("bias", 0.0)


def mlp_block(x, p):
    return dense(gelu_tanh(dense(x, p["Dense_0"])), p["Dense_1"])


def conv3x3_same(x, kernel):
    """x [B, H, W, Cin], kernel [3, 3, Cin, Cout], stride 1, zero 'SAME' padding."""
    b, h, w, _ = x.shape
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    out = np.zeros((b, h, w, kernel.shape[-1]))
    for dy in range(3):
        for dx in range(3):
            out += padded[:, dy : dy + h, dx : dx + w, :] @ kernel[dy, dx]
    return out


# --- one frame ---------------------------------------------------------------------


def token_learner_v11_frame(x, p):
    """x [B, N, C] -> [B, S, C]: softmax over positions of an MLP, pooling the raw x."""
    logits = mlp_block(layer_norm(x, p["LayerNorm_0"]), p["token_masking"])  # [B, N, S]
    weights = softmax(logits, axis=1)  # normalise over the N positions
    b, n, c = x.shape
    s = logits.shape[-1]
    out = np.zeros((b, s, c))
    for i in range(s):
        out[:, i, :] = (weights[:, :, i : i + 1] * x).sum(axis=1)
    return out


def token_learner_v1_frame(x, p, pooling="sum"):
    """x [B, H, W, C] -> [B, S, C]: sigmoid maps from 3x3 convs, sum (or mean) pooling."""
    convs = sorted(k for k in p if k.startswith("Conv_"))
    a = layer_norm(x, p["LayerNorm_0"])
    for i, name in enumerate(convs):
        a = conv3x3_same(a, p[name]["kernel"])
        if i < len(convs) - 1:
            a = gelu_tanh(a)
    alpha = sigmoid(a)  # [B, H, W, S]
    b, h, w, c = x.shape
    s = alpha.shape[-1]
    out = np.zeros((b, s, c))
    for i in range(s):
        weighted = alpha[..., i : i + 1] * x  # [B, H, W, C]
        out[:, i, :] = weighted.sum(axis=(1, 2))
        if pooling == "mean":
            out[:, i, :] /= h * w
    return out


def fuser_frame(y, x, p):
    """y [B, S, C] already mixed tokens, x [B, N, C] -> [B, N, C] (no residual)."""
    beta = sigmoid(mlp_block(layer_norm(x, p["LayerNorm_0"]), p["token_masking"]))  # [B, N, S]
    return np.einsum("bns,bsc->bnc", beta, y)


def mix_tokens(y, p):
    """Token-axis linear map: y [B, S, C] -> [B, S, C], y'[s'] = sum_s y[s] M[s, s'] + b[s']."""
    y = layer_norm(y, p["fuser_mix_norm1"])
    mixed = np.einsum("bsc,st->btc", y, p["Dense_0"]["kernel"]) + p["Dense_0"]["bias"][:, None]
    return layer_norm(mixed, p["fuser_mix_norm2"])


# --- images and videos ---------------------------------------------------------------


def token_learner(x, p, version="1.1", pooling="sum"):
    """Image [B, H, W, C] -> [B, S, C]; video [B, T, H, W, C] -> [B, T*S, C] (frame-major)."""
    if x.ndim == 5:
        return np.concatenate(
            [token_learner(x[:, t], p, version, pooling) for t in range(x.shape[1])], axis=1
        )
    if version == "1.1":
        b, h, w, c = x.shape
        return token_learner_v11_frame(x.reshape(b, h * w, c), p)
    return token_learner_v1_frame(x, p, pooling)


def token_fuser(tokens, x, p, mix_over_time=True):
    """tokens [B, T*S, C], x [B, H, W, C] or [B, T, H, W, C] -> same shape as x."""
    if x.ndim == 4:
        b, h, w, c = x.shape
        y = mix_tokens(tokens, p)
        return fuser_frame(y, x.reshape(b, h * w, c), p).reshape(x.shape)
    b, t, h, w, c = x.shape
    s = tokens.shape[1] // t
    if mix_over_time:
        y = mix_tokens(tokens, p)
        per_frame = [y[:, i * s : (i + 1) * s] for i in range(t)]
    else:
        per_frame = [mix_tokens(tokens[:, i * s : (i + 1) * s], p) for i in range(t)]
    frames = [fuser_frame(per_frame[i], x[:, i].reshape(b, h * w, c), p) for i in range(t)]
    return np.stack(frames, axis=1).reshape(x.shape)


def vector_attention(z, p):
    """z [B, N, C]: y[i, c] = sum_j softmax_j(gamma(q[i] * k[j]))[c] v[j, c]."""
    q, k, v = dense(z, p["query"]), dense(z, p["key"]), dense(z, p["value"])
    b, n, _ = z.shape
    out = np.zeros((b, n, v.shape[-1]))
    for i in range(n):
        rel = q[:, i : i + 1, :] * k  # [B, N(j), d]
        if "gamma" in p:
            rel = dense(rel, p["gamma"])  # [B, N(j), C]
        a = softmax(rel, axis=1)  # over j, per channel
        out[:, i, :] = (a * v).sum(axis=1)
    return out


# --- random parameter trees with the reference names -----------------------------------


def _ln(rng, c):
    return {"scale": rng.normal(1.0, 0.2, c), "bias": rng.normal(0, 0.2, c)}


def _dense(rng, cin, cout, bias=True):
    p = {"kernel": rng.normal(0, 1 / math.sqrt(cin), (cin, cout))}
    if bias:
        p["bias"] = rng.normal(0, 0.2, cout)
    return p


def random_v11_params(rng, channels, num_tokens, bottleneck):
    return {
        "LayerNorm_0": _ln(rng, channels),
        "token_masking": {
            "Dense_0": _dense(rng, channels, bottleneck),
            "Dense_1": _dense(rng, bottleneck, num_tokens),
        },
    }


def random_v1_params(rng, channels, num_tokens, num_convs=4):
    p = {"LayerNorm_0": _ln(rng, channels)}
    cin = channels
    for i in range(num_convs):
        p[f"Conv_{i}"] = {"kernel": rng.normal(0, 1 / math.sqrt(9 * cin), (3, 3, cin, num_tokens))}
        cin = num_tokens
    return p


def random_fuser_params(rng, channels, num_tokens, mixed_tokens, bottleneck):
    return {
        "fuser_mix_norm1": _ln(rng, channels),
        "Dense_0": _dense(rng, mixed_tokens, mixed_tokens),
        "fuser_mix_norm2": _ln(rng, channels),
        "LayerNorm_0": _ln(rng, channels),
        "token_masking": {
            "Dense_0": _dense(rng, channels, bottleneck),
            "Dense_1": _dense(rng, bottleneck, num_tokens),
        },
    }


def random_vector_attention_params(rng, channels, key_dim=None, gamma=False):
    d = key_dim or channels
    p = {
        "query": _dense(rng, channels, d),
        "key": _dense(rng, channels, d),
        "value": _dense(rng, channels, channels),
    }
    if gamma:
        p["gamma"] = _dense(rng, d, channels)
    return p
