#!/usr/bin/env python3
"""OPC UA peer for lineside's interop tests: a Python asyncua server (a different implementation from
the async-opcua client under test).

    opcua_server.py [--security none|basic256sha256] [--user NAME --password PW]

Binds 127.0.0.1 on a port chosen by the OS and prints that port as the first line of stdout. Exposes
namespace "urn:lineside:interop" with Objects/Line1/{Bore (Double), Count (Int32, +1 every 100 ms),
Program (String), Temps (Double[3]), and 64-bit extremes UMax (UInt64 18446744073709551615), Big (UInt64
12345678901234567890), IMin (Int64 -9223372036854775808), IMax (Int64 9223372036854775807)}. With --security basic256sha256 the only endpoint is
Basic256Sha256/SignAndEncrypt with user name authentication; the server certificate is generated at start
(self-signed, SAN 127.0.0.1 and localhost). Exits when stdin closes or on SIGTERM.
"""

import argparse
import asyncio
import datetime
import ipaddress
import sys
import tempfile
from pathlib import Path

from asyncua import Server, ua
from asyncua.crypto.cert_gen import dump_private_key_as_pem, generate_private_key, generate_self_signed_app_certificate
from asyncua.server.user_managers import UserManager
from asyncua.crypto.permission_rules import User, UserRole
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

NS_URI = "urn:lineside:interop"
APP_URI = "urn:lineside:interop-server"


class Users(UserManager):
    def __init__(self, user, password, allow_anonymous):
        self.user, self.password, self.allow_anonymous = user, password, allow_anonymous

    def get_user(self, iserver, username=None, password=None, certificate=None):
        # `certificate` is the client's application certificate for every token type; only user name
        # tokens carry a user name.
        if username is None:
            return User(role=UserRole.User) if self.allow_anonymous else None
        if username == self.user and password == self.password:
            return User(role=UserRole.User)
        return None


def make_certificate(directory: Path):
    key = generate_private_key()
    cert = generate_self_signed_app_certificate(
        key,
        "lineside interop server",
        {"organizationName": "lineside"},
        [
            x509.UniformResourceIdentifier(APP_URI),
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ],
        [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
    )
    cert_path, key_path = directory / "server.der", directory / "server.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    key_path.write_bytes(dump_private_key_as_pem(key))
    return cert_path, key_path


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--security", choices=["none", "basic256sha256"], default="none")
    ap.add_argument("--user", default="operator")
    ap.add_argument("--password", default="secret")
    args = ap.parse_args()

    secure = args.security == "basic256sha256"
    server = Server(user_manager=Users(args.user, args.password, allow_anonymous=not secure))
    await server.init()
    server.set_endpoint("opc.tcp://127.0.0.1:0/lineside/")
    server.set_server_name("lineside interop server")
    await server.set_application_uri(APP_URI)
    if secure:
        tmp = tempfile.TemporaryDirectory()
        cert, key = make_certificate(Path(tmp.name))
        await server.load_certificate(str(cert))
        await server.load_private_key(str(key))
        server.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt])
        server.set_security_IDs(["Username"])
    else:
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        server.set_security_IDs(["Anonymous"])

    idx = await server.register_namespace(NS_URI)
    line = await server.nodes.objects.add_folder(ua.NodeId("Line1", idx), "Line1")
    bore = await line.add_variable(ua.NodeId("Bore", idx), "Bore", 10.0, ua.VariantType.Double)
    count = await line.add_variable(ua.NodeId("Count", idx), "Count", 0, ua.VariantType.Int32)
    await line.add_variable(ua.NodeId("Program", idx), "Program", "O1234", ua.VariantType.String)
    await line.add_variable(ua.NodeId("Temps", idx), "Temps", [20.5, 21.0, 22.25], ua.VariantType.Double)
    await line.add_variable(ua.NodeId("UMax", idx), "UMax", 2**64 - 1, ua.VariantType.UInt64)
    await line.add_variable(ua.NodeId("Big", idx), "Big", 12345678901234567890, ua.VariantType.UInt64)
    await line.add_variable(ua.NodeId("IMin", idx), "IMin", -(2**63), ua.VariantType.Int64)
    await line.add_variable(ua.NodeId("IMax", idx), "IMax", 2**63 - 1, ua.VariantType.Int64)

    async with server:
        port = server.bserver._server.sockets[0].getsockname()[1]
        print(port, flush=True)
        stdin_closed = asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        n = 0
        while not stdin_closed.done():
            await asyncio.sleep(0.1)
            n += 1
            await count.write_value(ua.Variant(n, ua.VariantType.Int32))
            await bore.write_value(ua.Variant(10.0 + (n % 10) / 1000.0, ua.VariantType.Double))


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
