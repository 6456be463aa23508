"""Who may speak on the bus: a CurveZMQ key pair per service, a read-only key for the tap and
the CLIs, a ZAP handler that lets in only those keys, and which requests each key may send.

Every bus socket is encrypted and authenticated with CurveZMQ (ZeroMQ RFC 26):

- A binding socket (every PUB and REP) is a CURVE server holding its service's secret key.
- A connecting socket (every SUB and REQ) pins the public key of the service that binds the
  endpoint. A process that binds a service's port (or its local alias, ``BusSecurity.aliases``)
  while the service is down, without that service's secret key, completes no handshake: its
  prices, heartbeats and replies never reach anyone.
- On the serving side a ZAP handler (RFC 27) admits only the public keys in the key directory
  and names the caller; a REP reads that name (the frame's ``User-Id``) to decide what the
  caller may ask. Requests that change state (``WRITE_REQUESTS``) are for the services that
  need them (orders from ``signals``), operator commands that change state from the ``operator``
  key, and the ``reader`` key of the tap and the CLIs may only subscribe and send ``READ_REQUESTS``.

Key files use ZeroMQ's certificate format (what ``zmq.auth.load_certificate`` and czmq's
``zcert_load`` read), in one directory of mode 0700: ``NAME.key`` holds the public key and
``NAME.key_secret`` (mode 0600) both keys.
"""
from __future__ import annotations

import os
import re
import stat
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, TypedDict

import zmq
from zmq.utils import z85

SERVICES = ("marketdata", "signals", "portfolio", "pricer", "gateway")
# The synchronous pyzmq socket (its recv gives bytes) and the context that makes such sockets.
Socket = zmq.Socket[bytes]
Context = zmq.Context[Socket]

READER = "reader"  # the read-only client key of the tap and the CLIs
OPERATOR = "operator"  # the client key of operator commands that change state (reset_risk)
CLIENTS = (READER, OPERATOR)
IDENTITIES = (*SERVICES, *CLIENTS)
ZAP_DOMAIN = "go-trader"
ZAP_ENDPOINT = "inproc://zeromq.zap.01"  # where libzmq looks for a context's ZAP handler
KEYS_COMMAND = "make keys CONFIG=<your config> (or python -m services.keys --config <your config>)"

# Request types that change state, and the only keys that may send them. A new request type
# that changes state (a reset, say) must be listed here: a service key may send any other type.
WRITE_REQUESTS: Mapping[str, frozenset[str]] = {
    "order": frozenset({"signals"}),
    "option_order": frozenset({"signals"}),
    "orders": frozenset({"signals"}),  # a cycle's orders in one request (group commit)
    "reset_risk": frozenset({OPERATOR}),
}
# Everything a client key may ask beyond its WRITE_REQUESTS grants; any other type is refused to it.
READ_REQUESTS = frozenset({"status", "snapshot", "book_snapshot", "positions", "positions_batch", "equity", "prices",
                           "history", "chain", "price", "iv", "mark"})

_MONITOR_EVENT = struct.Struct("=Hi")  # a monitor message's first frame: 16-bit event id, 32-bit value

_KEY_LINE = re.compile(r'^\s*(public|secret)-key\s*=\s*"([^"]{40})"\s*$', re.MULTILINE)
_CERT = """#   ZeroMQ CURVE {kind} Certificate for the go-trader bus identity "{name}"
#   {note}

metadata
    identity = "{name}"
curve
    public-key = "{public}"
"""


class BusKeysError(RuntimeError):
    """The bus keys are missing, unreadable or too widely readable; the message says which file
    and how to fix it."""


def may_request(caller: str, request_type: str) -> str | None:
    """Why ``caller`` may not send ``request_type``, or None when it may (pure policy)."""
    writers = WRITE_REQUESTS.get(request_type)
    if writers is not None:
        if caller in writers:
            return None
        return f"{caller!r} may not send {request_type!r} (only {', '.join(sorted(writers))})"
    if caller in CLIENTS:
        return None if request_type in READ_REQUESTS else f"the {caller} key may not send {request_type!r}"
    if caller in SERVICES:
        return None
    return f"unknown caller {caller!r}"


# ---- key files -------------------------------------------------------------------------------

def public_path(directory: Path, identity: str) -> Path:
    return Path(directory) / f"{identity}.key"


def secret_path(directory: Path, identity: str) -> Path:
    return Path(directory) / f"{identity}.key_secret"


def _cert_text(name: str, public: bytes, secret: bytes | None) -> str:
    if secret is None:
        return _CERT.format(kind="Public", name=name, note="Safe to share.", public=public.decode())
    text = _CERT.format(kind="**Secret**", name=name, note="Never share this file nor loosen its mode (0600).",
                        public=public.decode())
    return text + f'    secret-key = "{secret.decode()}"\n'


def _write_new(path: Path, text: str, mode: int) -> None:
    """Write ``text`` to ``path`` atomically, created with ``mode`` (never readable by others
    in between, whatever the umask)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _read_cert(path: Path) -> dict[str, bytes]:
    """{'public': z85, 'secret': z85?} from a certificate file; BusKeysError naming the file."""
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        raise BusKeysError(f"bus key {path} is missing; create the keys with {KEYS_COMMAND}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BusKeysError(f"cannot read bus key {path}: {exc}") from None
    keys = {kind: value.encode() for kind, value in _KEY_LINE.findall(text)}
    if "public" not in keys:
        raise BusKeysError(f"bus key {path} holds no public-key line; delete it and run {KEYS_COMMAND}")
    for kind, value in keys.items():
        try:
            z85.decode(value)
        except (ValueError, KeyError):
            raise BusKeysError(f"bus key {path}: the {kind} key is not Z85 text; "
                               f"delete it and run {KEYS_COMMAND}") from None
    return keys


def _check_private(path: Path, what: str) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        wanted = "700" if what == "directory" else "600"
        raise BusKeysError(f"bus key {what} {path} has mode {mode:o}, readable or writable by others: "
                           f"run chmod {wanted} {path}")


def generate_keys(directory: Path) -> list[str]:
    """Create the key pairs ``directory`` lacks (the directory too, mode 0700); return the
    identities created. Existing secret keys are kept, so running it twice changes nothing."""
    directory = Path(directory)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    created = []
    for name in IDENTITIES:
        secret_file = secret_path(directory, name)
        if secret_file.exists():
            keys = _read_cert(secret_file)
            if "secret" not in keys:
                raise BusKeysError(f"bus key {secret_file} holds no secret-key line; "
                                   f"delete it and run {KEYS_COMMAND}")
            public, secret = keys["public"], keys["secret"]
        else:
            public, secret = zmq.curve_keypair()
            _write_new(secret_file, _cert_text(name, public, secret), 0o600)
            created.append(name)
        public_file = public_path(directory, name)
        if not public_file.exists() or _read_cert(public_file)["public"] != public:
            _write_new(public_file, _cert_text(name, public, None), 0o644)
    return created


# ---- what one process needs -------------------------------------------------------------------

@dataclass(frozen=True)
class BusSecurity:
    """One process's part of the bus: its key pair, the public key of the service binding each
    endpoint it may connect to, and the client keys its servers admit (key -> identity)."""

    identity: str
    public: bytes
    secret: bytes = field(repr=False)  # never in a log line or a traceback
    server_keys: Mapping[str, bytes]  # endpoint -> public key of the service that binds it
    clients: Mapping[bytes, str]  # raw 32-byte public key -> identity
    directory: Path = field(default=Path("."))
    aliases: Mapping[str, str] = field(default_factory=dict)  # endpoint -> where this host reaches it too

    def address(self, endpoint: str) -> str:
        """Where a socket of this process connects for ``endpoint``: its local alias (a Unix
        socket its service binds beside it) when it has one, else the endpoint itself."""
        return self.aliases.get(endpoint, endpoint)

    def serve(self, sock: Socket) -> None:
        """Make ``sock`` (before its bind) a CURVE server whose clients this context's ZAP
        handler checks; the handler is started here if the context has none yet."""
        ensure_zap(sock.context, self.clients)
        sock.curve_server = True
        sock.curve_publickey = self.public
        sock.curve_secretkey = self.secret
        sock.zap_domain = ZAP_DOMAIN.encode()

    def connect(self, sock: Socket, endpoint: str) -> str:
        """Connect ``sock`` as a CURVE client that accepts only the service configured at
        ``endpoint``; returns the address it connected to (``address``)."""
        server = self.server_keys.get(endpoint)
        if server is None:
            raise BusKeysError(f"no service binds {endpoint} in the config, so there is no key to pin for it")
        sock.curve_publickey = self.public
        sock.curve_secretkey = self.secret
        sock.curve_serverkey = server  # read at connect: one socket may pin a different key per endpoint
        address = self.address(endpoint)
        sock.connect(address)
        return address


def load_security(directory: Path, identity: str, binds: Mapping[str, Iterable[str]],
                  aliases: Mapping[str, str] | None = None) -> BusSecurity:
    """The keys of ``identity`` from ``directory``; ``binds`` maps each service to the endpoints it
    binds, ``aliases`` some of them to a second address their service binds as well.
    BusKeysError names the file and the fix when a key is missing or exposed."""
    directory = Path(directory)
    if identity not in IDENTITIES:
        raise BusKeysError(f"{identity!r} has no bus key; the identities are {', '.join(IDENTITIES)}")
    if not directory.is_dir():
        raise BusKeysError(f"bus key directory {directory} does not exist; create the keys with {KEYS_COMMAND}")
    _check_private(directory, "directory")
    publics = {name: _read_cert(public_path(directory, name))["public"] for name in IDENTITIES}
    secret_file = secret_path(directory, identity)
    own = _read_cert(secret_file)
    _check_private(secret_file, "file")
    if "secret" not in own:
        raise BusKeysError(f"bus key {secret_file} holds no secret-key line; delete it and run {KEYS_COMMAND}")
    if own["public"] != publics[identity]:
        raise BusKeysError(f"bus keys {secret_file} and {public_path(directory, identity)} do not match; "
                           f"delete both and run {KEYS_COMMAND}, then restart every service")
    server_keys = {endpoint: publics[service] for service, endpoints in binds.items() for endpoint in endpoints}
    clients = {z85.decode(key): name for name, key in publics.items()}
    return BusSecurity(identity, own["public"], own["secret"], server_keys, clients, directory, dict(aliases or {}))


# ---- the ZAP handler ------------------------------------------------------------------------

def zap_reply(request: list[bytes], clients: Mapping[bytes, str]) -> list[bytes]:
    """The ZAP reply frames for one request: 200 with the caller's identity as User-Id for a
    known CURVE key, 400 for anything else (pure)."""
    if len(request) < 6:
        request_id = request[1] if len(request) > 1 else b""
        return [b"1.0", request_id, b"400", b"malformed ZAP request", b"", b""]
    version, request_id, _domain, _address, _routing_id, mechanism, *credentials = request
    if version != b"1.0":
        return [b"1.0", request_id, b"400", b"unsupported ZAP version", b"", b""]
    if mechanism != b"CURVE" or len(credentials) != 1:
        return [b"1.0", request_id, b"400", b"CURVE keys required", b"", b""]
    identity = clients.get(credentials[0])
    if identity is None:
        return [b"1.0", request_id, b"400", b"unknown client key", b"", b""]
    return [b"1.0", request_id, b"200", b"OK", identity.encode(), b""]


class ZapHandler:
    """Answers a context's ZAP requests on a thread. ``refused`` counts clients turned away
    (read it from any thread); ``last_refused`` is the latest one's address and reason."""

    def __init__(self, ctx: Context, clients: Mapping[bytes, str]) -> None:
        self.ctx = ctx
        self.clients = dict(clients)
        self.refused = 0
        self.last_refused = ""
        self._zap = ctx.socket(zmq.REP)
        self._zap.linger = 0
        try:
            self._zap.bind(ZAP_ENDPOINT)
        except zmq.ZMQError as exc:
            self._zap.close()
            raise BusKeysError(f"this context already has a ZAP handler ({exc})") from None
        self._wake_endpoint = f"inproc://go-trader-zap-stop-{id(self):x}"
        self._wake = ctx.socket(zmq.PAIR)
        self._wake.linger = 0
        self._wake.bind(self._wake_endpoint)
        # Both sockets now belong to the thread; this side keeps none open, so ctx.term() alone
        # also ends the handler (its poll raises ContextTerminated).
        self._thread = threading.Thread(target=self._run, name="zap", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self._zap, zmq.POLLIN)
        poller.register(self._wake, zmq.POLLIN)
        try:
            while True:
                ready = dict(poller.poll())
                if self._wake in ready:
                    return
                request = self._zap.recv_multipart()
                reply = zap_reply(request, self.clients)
                if reply[2] != b"200":
                    self.refused += 1
                    address = request[3].decode(errors="replace") if len(request) > 3 else "?"
                    self.last_refused = f"{address}: {reply[3].decode()}"
                self._zap.send_multipart(reply)
        except zmq.ContextTerminated:
            return
        finally:
            self._zap.close(linger=0)
            self._wake.close(linger=0)
            with _handlers_lock:
                if _handlers.get(id(self.ctx)) is self:
                    del _handlers[id(self.ctx)]

    def stop(self) -> None:
        """Stop the thread and close its sockets; call before the context is terminated."""
        if not self._thread.is_alive():
            return
        poke = self.ctx.socket(zmq.PAIR)
        poke.connect(self._wake_endpoint)
        poke.send(b"")
        poke.close(linger=1000)  # a lingering inproc close still delivers what was sent
        self._thread.join(5)


_handlers: dict[int, ZapHandler] = {}
_handlers_lock = threading.Lock()


def ensure_zap(ctx: Context, clients: Mapping[bytes, str]) -> ZapHandler:
    """The running ZAP handler of ``ctx``, started now if there is none. One context admits one
    set of keys: asking for another is an error, never a silent union."""
    with _handlers_lock:
        handler = _handlers.get(id(ctx))
        if handler is not None and handler.ctx is ctx and handler.alive:
            if handler.clients != dict(clients):
                raise BusKeysError("this context's ZAP handler already admits another set of keys")
            return handler
        handler = _handlers[id(ctx)] = ZapHandler(ctx, clients)
        return handler


def zap_handler(ctx: Context) -> ZapHandler | None:
    """The running ZAP handler of ``ctx`` (to read its refusal counts), or None."""
    with _handlers_lock:
        handler = _handlers.get(id(ctx))
        return handler if handler is not None and handler.ctx is ctx else None


def stop_zap(ctx: Context) -> None:
    """Stop ``ctx``'s ZAP handler, if any (before ``ctx.term()``; ``destroy()`` needs it first)."""
    with _handlers_lock:
        handler = _handlers.pop(id(ctx), None)
    if handler is not None and handler.ctx is ctx:
        handler.stop()


class MonitorEvent(TypedDict):
    """One socket-monitor event, keyed as pyzmq's ``parse_monitor_message`` keys it."""

    event: zmq.Event
    value: int
    endpoint: bytes


def recv_monitor_message(monitor: Socket, flags: int = 0) -> MonitorEvent:
    """The next event on a socket monitor (``get_monitor_socket``) as pyzmq's
    ``zmq.utils.monitor.recv_monitor_message`` keys it: ``event`` a ``zmq.Event``, ``value`` its
    int (an fd, an errno), ``endpoint`` bytes. Parsed here because that module imports ``zmq.asyncio``:
    asyncio and 60 modules, 4 MB in every process, none of which runs an event loop."""
    frames = monitor.recv_multipart(flags)
    if len(frames) != 2 or len(frames[0]) != _MONITOR_EVENT.size:
        raise RuntimeError(f"socket monitor: expected [6-byte event, endpoint], got {frames!r}")
    event, value = _MONITOR_EVENT.unpack(frames[0])
    return {"event": zmq.Event(event), "value": value, "endpoint": frames[1]}
