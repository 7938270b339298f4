"""The idle agent's config shared by scripts/order-symbols (the functions it runs) and
scripts/measure-idle-rss (its memory): the e2e_load bench's `idle` case (benches/e2e/config.rs, `header`
and `sim_devices`), spelled again here because the bench is Rust. Keep the three the same: the code
layout is recorded from what this config runs, so a measurement under another config pays for code
the layout did not put first. Also the broker both run it against: a mosquitto on a free port.
"""

import socket
import subprocess


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_broker(mosquitto, port):
    """A mosquitto on 127.0.0.1:port, quiet; the caller terminates it (it is stopped and started again
    for outages)."""
    return subprocess.Popen([mosquitto, "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def idle_config(state_dir, port, tags=1000):
    """10 sim devices of `tags / 10` gauge tags each, sampled every 10 s, forwarding to 127.0.0.1:port."""
    t = (
        f'[agent]\nid = "load"\nstate_dir = "{state_dir}"\nlog_level = "warn"\ningest_queue = 4096\n'
        f'[store]\nsynchronous = "normal"\n'
        f'[mqtt]\nurl = "mqtt://127.0.0.1:{port}"\ninflight = 128\nmax_readings_per_message = 1000\n'
        f'max_message_size = "512KiB"\nreconnect_min = "200ms"\nreconnect_max = "1s"\n'
    )
    for d in range(10):
        t += f'[[device]]\nname = "plc{d}"\ndriver = "sim"\ninterval = "10s"\nseed = {d}\n'
        for i in range(tags // 10):
            t += (
                f'[[device.tag]]\nname = "t{i}"\nunit = "mm"\nmean = 10.0\nsigma = 0.1\n'
                f"resolution = 0.001\n"
            )
    return t
