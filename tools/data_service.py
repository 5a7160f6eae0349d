"""Run a `tf.data` service dispatcher or worker, to move the input pipeline off the trainer.

    # one machine: the dispatcher (hands out work, keeps no data)
    python tools/data_service.py --dispatcher --port=5050
    # each input machine: a worker (reads, decodes and augments the clips)
    python tools/data_service.py --worker --dispatcher_address=DISPATCHER_HOST:5050 --port=5051
    # the trainer (any strategy): read the training input through them
    python experiments/kinetics.py ... --set data.service_address=DISPATCHER_HOST:5050

Workers need this package and read access to the TFRecords (same paths as the trainer, e.g.
`gs://...`). The trainer keeps the bad-example check, batching and prefetch; see
docs/data_service.md for what runs where and the processing modes. Each server runs
until killed; a bad argument is one line on stderr and exit code 2. (gRPC shares
ports: a second server on a port in use starts too, so choose distinct ports.)
"""

import argparse
import os
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # tools/_common.py
import _common  # noqa: E402  (no TensorFlow: --help answers at once)


def _port(text):
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a port number in [0, 65535]")
    return value


def parse_args(argv=None):
    parser = _common.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    role = parser.add_mutually_exclusive_group(required=True)
    role.add_argument("--dispatcher", action="store_true", help="run the dispatcher")
    role.add_argument("--worker", action="store_true", help="run a worker")
    parser.add_argument("--port", type=_port, default=None,
                        help="port to listen on (dispatcher default 5050, worker 5051; 0: any)")
    parser.add_argument("--dispatcher_address", default=None,
                        help="worker: the dispatcher as HOST:PORT")
    parser.add_argument("--worker_address", default=None,
                        help="worker: HOST:PORT clients use to reach it (default: this "
                             "machine's name and --port)")
    parser.add_argument("--work_dir", default=None,
                        help="dispatcher: folder for its journal (restarts keep the jobs)")
    args = parser.parse_args(argv)
    if args.worker and not args.dispatcher_address:
        parser.error("--worker needs --dispatcher_address=HOST:PORT")
    if args.dispatcher and (args.dispatcher_address or args.worker_address):
        parser.error("--dispatcher_address and --worker_address are worker flags")
    if args.worker and args.work_dir:
        parser.error("--work_dir is a dispatcher flag")
    if args.port is None:
        args.port = 5050 if args.dispatcher else 5051
    return args


def serve(args, ready=None):
    """Start the server of `args`, print its address, and wait (forever unless `ready` is
    given: then return the server after calling `ready(address)`)."""
    tf = _common.import_tensorflow()
    service = tf.data.experimental.service
    try:
        if args.dispatcher:
            server = service.DispatchServer(service.DispatcherConfig(
                port=args.port, work_dir=args.work_dir, fault_tolerant_mode=bool(args.work_dir)))
            address = server.target
            what = "dispatcher"
        else:
            worker_address = args.worker_address or f"{socket.gethostname()}:%port%"
            server = service.WorkerServer(service.WorkerConfig(
                dispatcher_address=args.dispatcher_address.split("://")[-1], port=args.port,
                worker_address=worker_address))
            address = f"port {args.port}" if args.port else "a free port"
            what = f"worker of {args.dispatcher_address}"
    except tf.errors.OpError as e:
        first = (e.message or str(e)).strip().splitlines()[0]
        raise _common.ToolError(f"could not start the {'dispatcher' if args.dispatcher else 'worker'} "
                                f"on port {args.port}: {first}") from None
    print(f"data_service: {what} serving at {address}", flush=True)
    if ready is not None:
        ready(address)
        return server
    server.join()
    return 0


def main(argv=None):
    args = parse_args(argv)
    return _common.run_or_report("data_service", serve, args)


if __name__ == "__main__":
    sys.exit(main())
