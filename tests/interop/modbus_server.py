#!/usr/bin/env python3
"""A pymodbus server with known contents, the peer of lineside's Modbus interop tests.

Usage: modbus_server.py tcp | rtu-over-tcp | serial

The first line on stdout is where to reach the server: the TCP port it bound on 127.0.0.1 (port 0, so the
kernel picks a free one) for `tcp` and `rtu-over-tcp`, or the path of a pseudo-terminal for `serial` (RTU
framing on a serial line; the script relays between two pty pairs, so pymodbus opens one end by path with
pyserial exactly as it would open /dev/ttyUSB0, and lineside opens the other). The server runs until stdin
closes or it is killed.

Layout (zero-based addresses; see drivers/tests/modbus_interop.rs for the expected values):
  unit 1 holding registers 0..=18: u16, i16, u32 (abcd), f32 (cdab), f64 (abcd), i64 (dcba), string,
         a status word; holding registers from 100 are not defined (reads get IllegalDataAddress),
         except 200..=204 and 206..=209 (value = address): a hole at 205 inside a readable span, and
         300..=315: 64-bit extremes in order abcd: u64 18446744073709551615 (300), i64 -9223372036854775808
         (304), i64 9223372036854775807 (308), u64 12345678901234567890 (312)
  unit 1 input register 0: i16 -100; coils 0..=7 and discrete inputs 0..=7: alternating bits
  unit 2 holding register 0: 4242
  unit 3: receives requests but never answers (a dead unit on the line)
"""

import asyncio
import os
import struct
import sys
import threading

from pymodbus import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice


def words(fmt, value):
    raw = struct.pack(">" + fmt, value)
    return [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]


def holding_unit1():
    regs = []
    regs += words("H", 54321)  # 0 u16
    regs += words("h", -12345)  # 1 i16
    regs += words("I", 3_000_000_123)  # 2..3 u32 abcd
    regs += list(reversed(words("f", -1234.5)))  # 4..5 f32 cdab
    regs += words("d", -6.02214076e23)  # 6..9 f64 abcd
    regs += [((w & 0xFF) << 8) | (w >> 8) for w in reversed(words("q", -8_000_000_000_000_000_321))]  # 10..13 i64 dcba
    regs += [int.from_bytes(b"PYMODBUS"[i : i + 2], "big") for i in range(0, 8, 2)]  # 14..17 string
    regs += [0b1000_0000_0000_0101]  # 18 status word
    return regs


def extremes_64():
    regs = []
    regs += words("Q", 2**64 - 1)  # 300..303 u64::MAX
    regs += words("q", -(2**63))  # 304..307 i64::MIN
    regs += words("q", 2**63 - 1)  # 308..311 i64::MAX
    regs += words("Q", 12345678901234567890)  # 312..315 above i64::MAX
    return regs


def devices():
    bits = [i % 2 == 0 for i in range(8)]
    unit1 = SimDevice(
        id=1,
        simdata=(
            [SimData(0, values=bits, datatype=DataType.BITS)],
            [SimData(0, values=bits, datatype=DataType.BITS)],
            [
                SimData(0, values=holding_unit1(), datatype=DataType.REGISTERS),
                SimData(200, values=list(range(200, 205)), datatype=DataType.REGISTERS),
                SimData(206, values=list(range(206, 210)), datatype=DataType.REGISTERS),
                SimData(300, values=extremes_64(), datatype=DataType.REGISTERS),
            ],
            [SimData(0, values=words("h", -100), datatype=DataType.REGISTERS)],
        ),
    )
    unit2 = SimDevice(
        id=2,
        simdata=(
            [SimData(0, values=[False], datatype=DataType.BITS)],
            [SimData(0, values=[False], datatype=DataType.BITS)],
            [SimData(0, values=[4242], datatype=DataType.REGISTERS)],
            [SimData(0, values=[0], datatype=DataType.REGISTERS)],
        ),
    )
    return [unit1, unit2]


DEAD_UNIT = 3


def silence_dead_unit(unit_byte):
    """A trace_packet hook that drops every reply of the dead unit (pymodbus answers unknown units with an
    exception otherwise). `unit_byte` is where the unit id sits in a frame: 0 for RTU, 6 for MBAP."""

    def trace(sending, packet):
        if sending and len(packet) > unit_byte and packet[unit_byte] == DEAD_UNIT:
            return b""
        return packet

    return trace


def relay(a, b):
    """Copies bytes from fd a to fd b until either end fails."""
    while True:
        try:
            data = os.read(a, 4096)
            if not data:
                return
            os.write(b, data)
        except OSError:
            return


def raw_pty():
    import tty

    master, slave = os.openpty()
    tty.setraw(slave)
    tty.setraw(master)
    return master, slave, os.ttyname(slave)


async def wait_for_stdin_close():
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)


async def main(mode):
    if mode in ("tcp", "rtu-over-tcp"):
        framer = FramerType.SOCKET if mode == "tcp" else FramerType.RTU
        server = ModbusTcpServer(
            devices(),
            address=("127.0.0.1", 0),
            framer=framer,
            trace_packet=silence_dead_unit(6 if mode == "tcp" else 0),
        )
        await server.serve_forever(background=True)
        port = server.transport.sockets[0].getsockname()[1]
        print(port, flush=True)
    elif mode == "serial":
        m_a, s_a, name_a = raw_pty()
        m_b, s_b, name_b = raw_pty()
        threading.Thread(target=relay, args=(m_a, m_b), daemon=True).start()
        threading.Thread(target=relay, args=(m_b, m_a), daemon=True).start()
        server = ModbusSerialServer(
            devices(),
            framer=FramerType.RTU,
            port=name_a,
            baudrate=19200,
            parity="N",  # ptys refuse parity settings through pyserial; framing is what is tested
            trace_packet=silence_dead_unit(0),
        )
        await server.serve_forever(background=True)
        print(name_b, flush=True)
        _keep = (s_a, s_b)  # the slave ends stay open so the masters never see a hang-up
    else:
        sys.exit(f"unknown mode {mode!r}: tcp | rtu-over-tcp | serial")
    await wait_for_stdin_close()
    await server.shutdown()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "tcp"))
