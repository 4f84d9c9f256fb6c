"""End to end: the real server's protections against hostile and broken peers.

Each test starts `python -m trio_chat serve --port 0` with the limits it
needs and attacks it over loopback sockets. Time bounds are generous
ceilings showing that nothing hangs, not speed measurements; every wait is
on a real event (a line, end of stream, a log line, a /proc reading).
Measured figures are printed (`pytest -s` shows them).
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trio
from loadtools import (
    Canary,
    Client,
    Closer,
    PeakRss,
    Progress,
    ServerProcess,
    address,
    chat_server,
    client_hello,
    fill_until_stuck,
    joined_client,
    open_socket,
    open_tls,
    read_raw_until_eof,
    reset,
)

MIB = 1024  # in KiB, the unit of /proc's VmRSS
#: Ceiling for a whole test: nothing here should take a fraction of it.
TEST_TIMEOUT = 60.0
#: An INFO log line about one connection, e.g. "... INFO trio_chat.server: [c3] ".
CONN_INFO = r" INFO [\w.]+: \[c\d+\] "


def report(test: str, **figures: object) -> None:
    print(f"FIGURES {test}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))


def only_bye(lines: list[str], code: str) -> None:
    assert len(lines) == 1 and lines[0].startswith(f"BYE {code} "), lines


# -- 2. a line that never ends ----------------------------------------------


async def test_a_mebibyte_without_newline_is_dropped_cheaply(tmp_path: Path) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with (
            chat_server(tmp_path) as server,
            Closer() as closer,
            trio.open_nursery() as nursery,
        ):
            canary = await Canary.join(server.port)
            closer.add(canary.speaker)
            closer.add(canary.listener)
            hog = closer.add(await joined_client(server.port, "hog"))
            await canary.listener.expect("JOIN")
            assert await canary.round_trip() < 1.0
            rss = PeakRss(server)
            nursery.start_soon(rss.run)

            async def flood() -> None:
                with contextlib.suppress(trio.BrokenResourceError):
                    await hog.send_bytes(b"x" * (1 << 20))

            start = trio.current_time()
            nursery.start_soon(flood)
            with trio.move_on_after(2.0):
                await hog.read_to_end()
            dropped_after = trio.current_time() - start
            assert hog.ended, f"still connected after 2 s: {hog.lines[-3:]}"
            leave = await canary.listener.expect("LEAVE")
            assert leave.endswith(" #lobby hog disconnected (read queue exceeded)")
            round_trip = await canary.round_trip()
            rss.sample()
            report(
                "1MiB-no-newline",
                dropped_after_s=f"{dropped_after:.3f}",
                rss_growth_kib=rss.growth_kib,
                canary_rtt_ms=f"{round_trip * 1000:.1f}",
            )
            assert rss.growth_kib < 5 * MIB
            await server.expect_count(CONN_INFO + r"dropped: read queue exceeded", 1)
            nursery.cancel_scope.cancel()


# -- 7, 8. silent sockets (slowloris) ---------------------------------------


@pytest.mark.parametrize("use_tls", [False, True], ids=["plain", "tls"])
async def test_slowloris_sockets_are_closed_and_chat_stays_fast(
    tmp_path: Path, use_tls: bool
) -> None:
    silent_count, timeout = 60, 3.0
    limits = ("--name-timeout", "3", "--handshake-timeout", "3", "--flood-rate", "0")
    with trio.fail_after(TEST_TIMEOUT):
        async with (
            chat_server(tmp_path, *limits, tls=use_tls) as server,
            Closer() as closer,
        ):
            canary = await Canary.join(server.port, use_tls=use_tls)
            closer.add(canary.speaker)
            closer.add(canary.listener)
            closed_after: list[float] = []
            last_lines: list[bytes] = []

            async def silent(index: int) -> None:
                start = trio.current_time()
                # One address each: the per-address limits stay at defaults.
                stream = await open_socket(server.port, source=address(7, index))
                async with stream:
                    data = await read_raw_until_eof(stream)
                closed_after.append(trio.current_time() - start)
                last_lines.append(data.rstrip(b"\r\n").rpartition(b"\r\n")[2])

            async with trio.open_nursery() as nursery:
                for index in range(silent_count):
                    nursery.start_soon(silent, index)
                while len(closed_after) < silent_count:
                    await canary.round_trip()
                    await trio.sleep(0.02)  # pacing the measurements
            report(
                f"slowloris-{'tls' if use_tls else 'plain'}",
                slowest_close_s=f"{max(closed_after):.3f}",
                fastest_close_s=f"{min(closed_after):.3f}",
                round_trips=len(canary.round_trips),
                max_rtt_ms=f"{max(canary.round_trips) * 1000:.1f}",
            )
            assert max(closed_after) <= timeout + 1.0
            assert max(canary.round_trips) < 0.2
            if use_tls:
                logged = r"TLS handshake timed out"
            else:
                assert all(line.startswith(b"BYE name-timeout ") for line in last_lines)
                logged = r"no name within"
            await server.expect_count(CONN_INFO + logged, silent_count)


async def test_tls_handshake_is_fast_beside_50_silent_tls_sockets(
    tmp_path: Path,
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with chat_server(tmp_path, tls=True) as server, Closer() as closer:
            for index in range(50):
                closer.add(await open_socket(server.port, source=address(8, index)))
            await server.wait_count(CONN_INFO + r"connected from 127\.0\.8\.", 50)
            handshakes = []
            for _ in range(5):
                start = trio.current_time()
                stream = closer.add(await open_tls(server.port))
                handshakes.append(trio.current_time() - start)
                await closer.add(Client(stream)).expect("NAME")
                await stream.aclose()
            report(
                "tls-handshake-beside-50-silent",
                handshake_ms=[round(t * 1000, 1) for t in handshakes],
            )
            assert max(handshakes) < 0.2


# -- 9. connection floods ---------------------------------------------------


async def test_the_11th_connection_from_one_address_is_refused(tmp_path: Path) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with chat_server(tmp_path) as server, Closer() as closer:  # 10 each
            users = [
                closer.add(
                    await joined_client(server.port, f"u{i}", source="127.0.0.2")
                )
                for i in range(10)
            ]
            eleventh = closer.add(
                Client(await open_socket(server.port, source="127.0.0.2"))
            )
            only_bye(await eleventh.read_to_end(), "too-many-from-address")
            closer.add(await joined_client(server.port, "other", source="127.0.0.3"))
            await server.expect_count(CONN_INFO + r"refused 127\.0\.0\.2:\d+: ", 1)
            # The count goes down again when one of them leaves.
            await users[0].aclose()
            await server.wait_stats(lambda stats: stats["connections"] == 10)
            closer.add(await joined_client(server.port, "again", source="127.0.0.2"))


async def test_the_31st_connection_is_refused_with_max_connections_30(
    tmp_path: Path,
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with (
            chat_server(tmp_path, "--max-connections", "30") as server,
            Closer() as closer,
        ):
            clients = []
            for index in range(30):
                stream = await open_socket(server.port, source=address(9, index))
                client = closer.add(Client(stream))
                await client.expect("NAME")
                clients.append(client)
            stream = await open_socket(server.port, source=address(9, 30))
            only_bye(
                await closer.add(Client(stream)).read_to_end(), "too-many-connections"
            )
            await server.expect_count(CONN_INFO + r"refused ", 1)
            await clients[0].aclose()
            await server.wait_stats(lambda stats: stats["connections"] == 29)
            stream = await open_socket(server.port, source=address(9, 31))
            await closer.add(Client(stream)).expect("NAME")


async def test_the_21st_new_connection_in_a_minute_is_refused(tmp_path: Path) -> None:
    # Only the rate limit is under test: the concurrent limits are off.
    limits = ("--max-per-address", "0", "--max-unregistered-per-address", "0")
    with trio.fail_after(TEST_TIMEOUT):
        async with chat_server(tmp_path, *limits) as server, Closer() as closer:
            for _ in range(20):  # the default: 20 a minute
                stream = await open_socket(server.port, source="127.0.0.5")
                async with Client(stream) as client:
                    await client.expect("NAME")
            stream = await open_socket(server.port, source="127.0.0.5")
            only_bye(
                await closer.add(Client(stream)).read_to_end(),
                "too-many-new-connections",
            )
            stream = await open_socket(server.port, source="127.0.0.6")
            await closer.add(Client(stream)).expect("NAME")
            await server.expect_count(CONN_INFO + r"refused 127\.0\.0\.5:\d+: ", 1)


async def test_the_6th_unregistered_connection_from_one_address_is_refused(
    tmp_path: Path,
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with chat_server(tmp_path) as server, Closer() as closer:  # 5 each
            for _ in range(5):
                stream = await open_socket(server.port, source="127.0.0.7")
                await closer.add(Client(stream)).expect("NAME")
            stream = await open_socket(server.port, source="127.0.0.7")
            only_bye(
                await closer.add(Client(stream)).read_to_end(), "too-many-unregistered"
            )
            # Joined users do not count: one more joins from another address.
            closer.add(await joined_client(server.port, "named", source="127.0.0.8"))
            await server.expect_count(CONN_INFO + r"refused 127\.0\.0\.7:\d+: ", 1)


async def test_a_refusal_on_the_tls_port_is_just_a_close(tmp_path: Path) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with (
            chat_server(tmp_path, "--max-connections", "1", tls=True) as server,
            Closer() as closer,
        ):
            first = closer.add(Client(await open_tls(server.port)))
            await first.expect("NAME")
            stream = closer.add(await open_socket(server.port))
            with trio.fail_after(1.0):
                assert await read_raw_until_eof(stream) == b""
            await server.expect_count(CONN_INFO + r"refused ", 1)


# -- 11, 12. clients that do not read ---------------------------------------


async def test_a_client_that_never_reads_is_dropped_and_nobody_loses_a_line(
    tmp_path: Path,
) -> None:
    sender_count, line_count = 5, 2000
    # Lines in flight per sender: honest readers (this process) keep up, so
    # only the one that never reads can fill its outbox.
    window = 50
    with trio.fail_after(TEST_TIMEOUT):
        async with (
            chat_server(tmp_path, "--flood-rate", "0") as server,
            Closer() as closer,
        ):
            victim_stream = closer.add(await open_socket(server.port, rcvbuf=4096))
            await Client(victim_stream).join("victim")
            senders = [
                closer.add(await joined_client(server.port, f"s{i}"))
                for i in range(sender_count)
            ]
            readers = [*senders, closer.add(await joined_client(server.port, "obs"))]
            received = {
                reader.name: {s.name: 0 for s in senders if s is not reader}
                for reader in readers
            }
            leaves: dict[str, list[str]] = {reader.name: [] for reader in readers}
            progress = Progress()
            rss = PeakRss(server)

            async def read(reader: Client) -> None:
                counts = received[reader.name]
                while not leaves[reader.name] or min(counts.values()) < line_count:
                    line = await reader.next_line()
                    assert line is not None, f"{reader.name} lost: {reader.lines[-3:]}"
                    kind = line.split(" ", 1)[0]
                    assert kind not in ("BYE", "ERR"), (reader.name, line)
                    if kind == "MSG":
                        _, _, _, sender, text = line.split(" ", 4)
                        name = sender[1:-1]
                        assert text == f"L {name} {counts[name]}", (reader.name, line)
                        counts[name] += 1
                        progress.notify()
                    elif kind == "LEAVE":
                        leaves[reader.name].append(line)

            async def send(sender: Client) -> None:
                sent = 0
                while sent < line_count:
                    slowest = min(
                        received[r.name][sender.name]
                        for r in readers
                        if r is not sender
                    )
                    end = min(line_count, slowest + window)
                    if end <= sent:
                        await progress.wait()
                        continue
                    await sender.send_bytes(
                        "".join(
                            f"L {sender.name} {n}\r\n" for n in range(sent, end)
                        ).encode()
                    )
                    sent = end

            start = trio.current_time()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(rss.run)
                async with trio.open_nursery() as traffic:
                    for reader in readers:
                        traffic.start_soon(read, reader)
                    for sender in senders:
                        traffic.start_soon(send, sender)
                nursery.cancel_scope.cancel()
            rss.sample()
            report(
                "never-reading-client",
                lines_delivered=sum(sum(c.values()) for c in received.values()),
                seconds=f"{trio.current_time() - start:.2f}",
                rss_growth_kib=rss.growth_kib,
            )
            for reader in readers:
                assert all(n == line_count for n in received[reader.name].values())
                (leave,) = leaves[reader.name]
                assert leave.endswith(
                    " #lobby victim disconnected (send queue exceeded)"
                )
            assert rss.growth_kib < 10 * MIB
            await server.expect_count(CONN_INFO + r"dropped: send queue exceeded", 1)


async def test_a_write_that_never_completes_times_out(tmp_path: Path) -> None:
    limits = (
        "--write-timeout",
        "2",
        "--flood-rate",
        "0",
        # An outbox so large that only the write timeout can end it.
        "--outbox-messages",
        "1000000",
        "--outbox-bytes",
        "1000000000",
    )
    with trio.fail_after(TEST_TIMEOUT):
        async with (
            chat_server(tmp_path, *limits) as server,
            Closer() as closer,
            trio.open_nursery() as nursery,
        ):
            stalled_stream = closer.add(await open_socket(server.port, rcvbuf=4096))
            await Client(stalled_stream).join("stalled")
            sender = closer.add(await joined_client(server.port, "sender"))
            observer = closer.add(await joined_client(server.port, "observer"))
            nursery.start_soon(sender.drain)
            nursery.start_soon(observer.drain)
            stalled_since = await fill_until_stuck(
                port=server.port, sender=sender, observer=observer, stuck=stalled_stream
            )
            leave = await observer.wait_for(r" #lobby stalled disconnected")
            after = trio.current_time() - stalled_since
            report("write-timeout", dropped_after_stall_s=f"{after:.3f}")
            assert leave.endswith(" #lobby stalled disconnected (write timeout)")
            assert after < 3.0
            with trio.fail_after(2.0):  # the server has closed it
                await read_raw_until_eof(stalled_stream)
            await server.expect_count(
                CONN_INFO + r"(dropped|disconnected): write timeout", 1
            )
            nursery.cancel_scope.cancel()


# -- 14. the wrong protocol -------------------------------------------------


async def test_plain_text_on_the_tls_port_is_closed(tmp_path: Path) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with chat_server(tmp_path, tls=True) as server, Closer() as closer:
            stream = closer.add(await open_socket(server.port))
            await stream.send_all(b"hello, is this chat?\r\n")
            start = trio.current_time()
            with trio.fail_after(1.0):
                data = await read_raw_until_eof(stream)
            report("plain-on-tls", eof_after_s=f"{trio.current_time() - start:.3f}")
            assert b"HELLO" not in data


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        pytest.param(client_hello(), "tls-not-enabled", id="tls-client-hello"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "not-http", id="http"),
    ],
)
async def test_the_wrong_protocol_on_the_plain_port_gets_one_bye(
    tmp_path: Path, payload: bytes, code: str
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with chat_server(tmp_path) as server:
            async with Client(await open_socket(server.port)) as client:
                await client.send_bytes(payload)
                start = trio.current_time()
                with trio.fail_after(1.0):
                    lines = await client.read_to_end()
                report(f"{code}", eof_after_s=f"{trio.current_time() - start:.3f}")
            byes = [line for line in lines if line.startswith("BYE ")]
            assert byes == [lines[-1]] and byes[0].startswith(f"BYE {code} "), lines


# -- 16. out of file descriptors --------------------------------------------


async def test_running_out_of_file_descriptors_is_survived(tmp_path: Path) -> None:
    limits_off = [
        *("--max-per-address", "0", "--max-connections", "0"),
        *("--max-unregistered", "0", "--max-unregistered-per-address", "0"),
        *("--max-new-per-minute", "0"),
    ]
    with trio.fail_after(TEST_TIMEOUT):
        async with chat_server(tmp_path, *limits_off, nofile=64) as server:
            async with Closer() as closer:
                for _ in range(100):
                    closer.add(await open_socket(server.port))
                # The server has run out of descriptors (and says so).
                await server.wait_for(r"accept failed|Too many open files")
                fds_at_limit = server.fd_count()
                assert server.alive()
            start = trio.current_time()
            async with await joined_client(server.port, "after"):
                joined_after = trio.current_time() - start
            report(
                "out-of-fds",
                fds_at_limit=fds_at_limit,
                rejoin_after_s=f"{joined_after:.3f}",
            )
            assert joined_after < 1.0
            assert server.alive()


# -- 17. shutting down under load -------------------------------------------


async def _stuck_client(server: ServerProcess, closer: Closer) -> trio.SocketStream:
    """A joined connection that will never read, with a tiny receive buffer."""
    stream = closer.add(await open_socket(server.port, rcvbuf=4096))
    await Client(stream).join("stuck")
    return stream


async def test_sigint_under_load_says_goodbye_to_every_reader(tmp_path: Path) -> None:
    limits = (
        *("--max-per-address", "100", "--max-unregistered-per-address", "100"),
        *("--max-new-per-minute", "100", "--flood-rate", "0"),
    )
    with trio.fail_after(TEST_TIMEOUT):
        async with (
            chat_server(tmp_path, *limits) as server,
            Closer() as closer,
            trio.open_nursery() as nursery,
        ):
            stuck = await _stuck_client(server, closer)
            readers: list[Client] = []

            async def join(index: int) -> None:
                client = closer.add(await joined_client(server.port, f"r{index}"))
                readers.append(client)

            async with trio.open_nursery() as joining:
                for index in range(49):
                    joining.start_soon(join, index)
            for reader in readers:
                nursery.start_soon(reader.drain)
            await fill_until_stuck(
                port=server.port, sender=readers[0], observer=readers[1], stuck=stuck
            )
            server.process.send_signal(signal.SIGINT)
            start = trio.current_time()
            with trio.fail_after(5.0):
                status = await server.process.wait()
            exited_after = trio.current_time() - start
            with trio.fail_after(2.0):
                for reader in readers:
                    while not reader.ended:
                        await reader.changed()
            report(
                "sigint-under-load",
                exit_status=status,
                exited_after_s=f"{exited_after:.3f}",
            )
            assert status == 0
            for reader in readers:
                assert reader.lines[-1].startswith("BYE server-shutdown "), (
                    reader.name,
                    reader.lines[-3:],
                )


async def test_a_second_sigint_cuts_a_long_grace_short(tmp_path: Path) -> None:
    limits = ("--shutdown-grace", "30", "--flood-rate", "0")
    with trio.fail_after(TEST_TIMEOUT):
        async with (
            chat_server(tmp_path, *limits) as server,
            Closer() as closer,
            trio.open_nursery() as nursery,
        ):
            stuck = await _stuck_client(server, closer)
            sender = closer.add(await joined_client(server.port, "sender"))
            reader = closer.add(await joined_client(server.port, "reader"))
            nursery.start_soon(sender.drain)
            nursery.start_soon(reader.drain)
            await fill_until_stuck(
                port=server.port, sender=sender, observer=reader, stuck=stuck
            )
            server.process.send_signal(signal.SIGINT)
            await reader.wait_for(r"^BYE server-shutdown ")
            await server.wait_for(r"shutting down")
            assert server.alive(), "the grace period should still be running"
            server.process.send_signal(signal.SIGINT)
            start = trio.current_time()
            with trio.fail_after(5.0):
                status = await server.process.wait()
            exited_after = trio.current_time() - start
            report(
                "second-sigint",
                exit_status=status,
                exited_after_s=f"{exited_after:.3f}",
            )
            assert status == 130
            assert exited_after < 2.0
            nursery.cancel_scope.cancel()


# -- 13. abrupt ends --------------------------------------------------------


async def _rst_mid_send(port: int) -> None:
    client = await joined_client(port, "gone")
    assert isinstance(client.stream, trio.SocketStream)
    await client.send_bytes(b"this line never ends")
    await reset(client.stream)


async def _half_close(port: int) -> None:
    client = await joined_client(port, "gone")
    assert isinstance(client.stream, trio.SocketStream)
    async with client:
        await client.stream.send_eof()
        await client.read_to_end()  # then the server closes its side too


async def _tls_without_close_notify(port: int) -> None:
    client = await joined_client(port, "gone", use_tls=True)
    assert isinstance(client.stream, trio.SSLStream)
    await client.stream.transport_stream.aclose()


async def _close_during_tls_handshake(port: int) -> None:
    async with await open_socket(port) as stream:
        await stream.send_all(client_hello()[:40])


@pytest.mark.parametrize(
    ("end", "use_tls", "reason"),
    [
        pytest.param(_rst_mid_send, False, "connection reset", id="rst-mid-send"),
        pytest.param(_half_close, False, "connection closed", id="half-close"),
        pytest.param(_tls_without_close_notify, True, None, id="tls-no-close-notify"),
        pytest.param(_close_during_tls_handshake, True, None, id="close-in-handshake"),
    ],
)
async def test_an_abrupt_end_is_announced_once_and_leaves_nothing_behind(
    tmp_path: Path,
    end: Callable[[int], Awaitable[None]],
    use_tls: bool,
    reason: str | None,
) -> None:
    joins = end is not _close_during_tls_handshake
    with trio.fail_after(TEST_TIMEOUT):
        async with (
            chat_server(tmp_path, tls=use_tls) as server,
            Closer() as closer,
            trio.open_nursery() as nursery,
        ):
            watcher = closer.add(
                await joined_client(server.port, "watcher", use_tls=use_tls)
            )
            marker = closer.add(
                await joined_client(server.port, "marker", use_tls=use_tls)
            )
            nursery.start_soon(watcher.drain)
            baseline = await server.stats()
            await end(server.port)
            if joins:
                leave = await watcher.wait_for(r"^LEAVE ")
                assert " #lobby gone disconnected (" in leave, leave
                if reason is not None:
                    assert leave.endswith(f" #lobby gone disconnected ({reason})"), (
                        leave
                    )
            settled = await server.wait_stats(
                lambda stats: all(
                    stats.get(key) == baseline.get(key)
                    for key in ("connections", "unregistered", "users", "tasks", "fds")
                )
            )
            report("abrupt-end", baseline=baseline, after=settled)
            # Nothing more about "gone" comes after the one LEAVE.
            await marker.send("sync")
            await watcher.wait_for(r"^MSG .* <marker> sync$")
            leaves = [line for line in watcher.lines if line.startswith("LEAVE ")]
            assert len(leaves) == (1 if joins else 0), leaves
            if joins:
                assert " #lobby gone disconnected" in leaves[0]
            nursery.cancel_scope.cancel()
