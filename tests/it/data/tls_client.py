"""A third-party TLS echo client for netecho's tests: Python's ssl module
(OpenSSL), not rustls, so the server is checked against another stack.

    tls_client.py echo HOST PORT FILE [--tls12] [--ca CA] [--cert C --key K]
        sends FILE's bytes while reading the echo, then close_notify
        (unwrap), and expects the server's close_notify and then FIN.
        Prints: ok <version> <bytes> <sha256 of the server certificate>
    tls_client.py refused HOST PORT [--ca CA] [--cert C --key K]
        expects the server to refuse the client (mutual TLS): prints
        "refused <why>" or "accepted".
    tls_client.py noread HOST PORT
        sends without ever reading, for up to 20 s: the server must close
        the connection (--stall-timeout). Prints "closed <why>".
    tls_client.py hold HOST PORT
        echoes one byte, prints "held", then waits for the server to close
        the connection: prints "closed <how>".
    tls_client.py sequence HOST PORT N
        N clients one after another, each connecting as soon as the one
        before had the server's close_notify: a ping echoed, then both
        close_notifys. Prints "ok N", or "FAIL client I: <why>".
Any other outcome prints a line starting with "FAIL" and exits 1.
"""
import hashlib
import socket
import ssl
import sys

TIMEOUT = 20


def context(args):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if "--ca" in args:
        ctx.load_verify_locations(args[args.index("--ca") + 1])
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if "--cert" in args:
        ctx.load_cert_chain(args[args.index("--cert") + 1], args[args.index("--key") + 1])
    if "--tls12" in args:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def connect(host, port, args):
    raw = socket.create_connection((host, int(port)), timeout=TIMEOUT)
    return context(args).wrap_socket(raw, server_hostname="localhost")


def echo(host, port, path, args):
    """One thread, non-blocking, select(): OpenSSL must not see SSL_read
    and SSL_write on one connection from two threads at once."""
    import select
    import time

    data = open(path, "rb").read()
    s = connect(host, port, args)
    version = s.version()
    fp = hashlib.sha256(s.getpeercert(binary_form=True)).hexdigest()
    s.setblocking(False)
    sent = 0
    got = bytearray()
    deadline = time.monotonic() + 4 * TIMEOUT
    eof = False
    while len(got) < len(data) and not eof:
        if time.monotonic() > deadline:
            print(f"FAIL timed out: sent {sent}, got {len(got)} of {len(data)}")
            return 1
        want_w = sent < len(data)
        select.select([s], [s] if want_w else [], [], 1.0)
        if want_w:
            try:
                sent += s.send(data[sent : sent + (1 << 16)])
            except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
                pass
        # Drain what is decrypted and buffered, not only what select saw.
        while True:
            try:
                b = s.recv(1 << 16)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                break
            if not b:
                eof = True
                break
            got += b
    if bytes(got) != data:
        at = next((i for i, (a, b) in enumerate(zip(got, data)) if a != b), min(len(got), len(data)))
        print(f"FAIL {len(got)} of {len(data)} bytes back (sent {sent}), first difference at {at}")
        return 1
    s.setblocking(True)
    s.settimeout(TIMEOUT)
    # Our close_notify; unwrap returns once the server's close_notify came.
    plain = s.unwrap()
    rest = plain.recv(16)
    if rest != b"":
        print(f"FAIL after close_notify: {rest!r} instead of FIN")
        return 1
    print(f"ok {version} {len(got)} {fp}")
    return 0


def refused(host, port, args):
    try:
        s = connect(host, port, args)
        # TLS 1.3: the server judges our certificate after our Finished,
        # so its refusal arrives on the first read.
        s.sendall(b"ping")
        b = s.recv(16)
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError) as e:
        print(f"refused {type(e).__name__}")
        return 0
    if b == b"":
        print("refused eof")
        return 0
    print("accepted")
    return 0


def noread(host, port, args):
    import time
    s = connect(host, port, args)
    chunk = b"s" * 65536
    deadline = time.monotonic() + TIMEOUT
    s.settimeout(1)
    while time.monotonic() < deadline:
        try:
            s.send(chunk)
        except (socket.timeout, ssl.SSLWantWriteError):
            continue
        except (OSError, ssl.SSLError) as e:
            print(f"closed {type(e).__name__}")
            return 0
    print("FAIL still open after 20 s")
    return 1


def hold(host, port, args):
    s = connect(host, port, args)
    s.sendall(b"h")
    if s.recv(1) != b"h":
        print("FAIL no echo")
        return 1
    print("held", flush=True)
    s.settimeout(TIMEOUT)
    try:
        b = s.recv(16)
    except socket.timeout:
        print("FAIL not closed")
        return 1
    except (OSError, ssl.SSLError) as e:
        print(f"closed {type(e).__name__}")
        return 0
    print(f"closed {'eof' if b == b'' else repr(b)}")
    return 0


def sequence(host, port, count):
    for i in range(int(count)):
        try:
            s = connect(host, port, [])
            s.settimeout(TIMEOUT)
            msg = f"client {i}".encode()
            s.sendall(msg)
            got = b""
            while len(got) < len(msg):
                b = s.recv(64)
                if not b:
                    break
                got += b
            if got != msg:
                print(f"FAIL client {i}: {got!r} back for {msg!r}")
                return 1
            s.unwrap().close()
        except (OSError, ssl.SSLError) as e:
            print(f"FAIL client {i}: {type(e).__name__}: {e}")
            return 1
    print(f"ok {count}")
    return 0


def main():
    mode, host, port = sys.argv[1:4]
    if mode == "echo":
        return echo(host, port, sys.argv[4], sys.argv[5:])
    if mode == "hold":
        return hold(host, port, sys.argv[4:])
    if mode == "noread":
        return noread(host, port, sys.argv[4:])
    if mode == "sequence":
        return sequence(host, port, sys.argv[4])
    if mode == "refused":
        return refused(host, port, sys.argv[4:])
    print(f"FAIL unknown mode {mode}")
    return 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as e:  # one line for the test's message
        print(f"FAIL {type(e).__name__}: {e}")
        sys.exit(1)
