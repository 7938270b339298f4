#!/usr/bin/env python3
"""The Modbus TCP peer of the e2e_load bench's Modbus workload: ONE pymodbus server holding UNITS units
(ids 1..UNITS), each with REGISTERS holding registers from address 0. Every collector under test polls
each unit over its own TCP connection, as ten separate devices behind one gateway would be polled.

Usage: modbus_load_server.py UNITS REGISTERS

The first line on stdout is the TCP port it bound on 127.0.0.1 (port 0: the kernel picks a free one). It
runs until stdin closes or it is killed.
"""

import asyncio
import sys

from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice


def unit(uid, registers):
    return SimDevice(
        id=uid,
        simdata=(
            [SimData(0, values=[False], datatype=DataType.BITS)],
            [SimData(0, values=[False], datatype=DataType.BITS)],
            [SimData(0, values=[(uid * 1000 + i) & 0xFFFF for i in range(registers)], datatype=DataType.REGISTERS)],
            [SimData(0, values=[0], datatype=DataType.REGISTERS)],
        ),
    )


async def main(units, registers):
    server = ModbusTcpServer([unit(u, registers) for u in range(1, units + 1)], address=("127.0.0.1", 0))
    await server.serve_forever(background=True)
    print(server.transport.sockets[0].getsockname()[1], flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    await server.shutdown()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
