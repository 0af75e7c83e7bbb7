import XCTest
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
@testable import HydraCore
@testable import HydraIO
import HydraTestSupport
#endif

/// Raw-socket clients against MiniHTTPServer's limits. Loopback only; every wait
/// is on a condition with a deadline, every loop is bounded.
final class MiniHTTPServerLimitsTests: XCTestCase {
    private func serve(_ limits: HTTPServerLimits, handler: @escaping HTTPHandler = { req in
        req.path == "/healthz" ? .text("ok\n") : .text("len=\(req.body.count)\n")
    }) throws -> MiniHTTPServer {
        let s = MiniHTTPServer(port: 0, limits: limits, handler: handler)
        try s.start()
        addTeardownBlock { s.stop() }
        return s
    }

    // MARK: raw client

    static func healthz(_ port: Int) -> Bool {
        LoopbackHTTP.request(port, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", timeout: 5).hasPrefix("HTTP/1.1 200 ")
    }

    static func waitFor(_ timeout: Double, _ cond: () -> Bool) -> Bool {
        let end = Date().addingTimeInterval(timeout)
        while Date() < end {
            if cond() { return true }
            usleep(10_000)
        }
        return cond()
    }

    static func threadCount() -> Int? {
        guard let s = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return nil }
        return s.split(separator: "\n").first { $0.hasPrefix("Threads:") }.flatMap { Int($0.dropFirst(8).trimmingCharacters(in: .whitespaces)) }
    }

    // MARK: tests

    func testConnectionsBeyondTheCapGet503AndNoThread() throws {
        let cap = 4
        let server = try serve(HTTPServerLimits(maxConnections: cap, requestTimeoutS: 20))
        var idle: [Int32] = []
        defer { idle.forEach { close($0) } }
        for _ in 0..<cap { idle.append(LoopbackHTTP.connect(server.port)) }
        XCTAssertTrue(Self.waitFor(10) { server.activeConnections == cap }, "the server took the first \(cap) connections")
        let threadsBefore = Self.threadCount()

        let extra = 24
        var replies: [String] = []
        for _ in 0..<extra {
            let fd = LoopbackHTTP.connect(server.port)
            XCTAssertGreaterThanOrEqual(fd, 0)
            replies.append(LoopbackHTTP.readReply(fd, timeout: 5).text)
            close(fd)
        }
        XCTAssertEqual(replies.filter { $0.hasPrefix("HTTP/1.1 503 ") }.count, extra, replies.first { !$0.hasPrefix("HTTP/1.1 503 ") } ?? "")
        XCTAssertTrue(replies.allSatisfy { $0.contains("too many connections") })
        XCTAssertEqual(server.rejections[.tooManyConnections], extra)
        XCTAssertLessThanOrEqual(server.peakConnections, cap)
        XCTAssertEqual(server.activeConnections, cap)
        if let before = threadsBefore, let after = Self.threadCount() {
            // Thread-per-connection without the cap would add `extra` threads; allow a little runtime noise.
            XCTAssertLessThan(after - before, 6, "threads grew from \(before) to \(after)")
        }

        idle.forEach { close($0) }
        idle = []
        XCTAssertTrue(Self.waitFor(10) { Self.healthz(server.port) }, "a normal request is served once the slots are free")
        XCTAssertLessThanOrEqual(server.peakConnections, cap)
    }

    func testOversizedContentLengthIsRefusedBeforeTheBody() throws {
        let called = Atomic<Int>(0)
        let server = try serve(HTTPServerLimits(maxBodyBytes: 1024, bodyLimit: { _, path in path == "/big" ? 8192 : nil }, requestTimeoutS: 30)) { req in
            called.wrappingAdd(1, ordering: .relaxed)
            return .text("len=\(req.body.count)\n")
        }
        let started = Date()
        // 100 MiB announced, 10 bytes sent: a server that read the body first would wait for the 30 s deadline.
        let r = LoopbackHTTP.request(server.port, "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 104857600\r\n\r\n0123456789", timeout: 15)
        XCTAssertTrue(r.hasPrefix("HTTP/1.1 413 "), r)
        XCTAssertLessThan(Date().timeIntervalSince(started), 10)
        XCTAssertEqual(called.load(ordering: .relaxed), 0)
        XCTAssertEqual(server.rejections[.bodyTooLarge], 1)

        let body = String(repeating: "a", count: 2000)
        let big = LoopbackHTTP.request(server.port, "POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n" + body)
        XCTAssertTrue(big.hasPrefix("HTTP/1.1 200 ") && big.hasSuffix("len=2000\n"), "a route with its own cap: \(big)")
        XCTAssertTrue(LoopbackHTTP.request(server.port, "POST /small HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n" + body).hasPrefix("HTTP/1.1 413 "))
        XCTAssertTrue(LoopbackHTTP.request(server.port, "POST /small HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n").hasPrefix("HTTP/1.1 400 "))
        XCTAssertTrue(LoopbackHTTP.request(server.port, "POST /small HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n").hasPrefix("HTTP/1.1 400 "))
        XCTAssertTrue(LoopbackHTTP.request(server.port, "POST /small HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc").hasPrefix("HTTP/1.1 400 "))
        let chunked = LoopbackHTTP.request(server.port, "POST /small HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n10000000\r\n")
        XCTAssertTrue(chunked.hasPrefix("HTTP/1.1 411 "), chunked)
        XCTAssertEqual(called.load(ordering: .relaxed), 1, "only the /big request reached the handler")
    }

    func testExpectContinueGetsTheBodyOnlyWhenItFits() throws {
        let server = try serve(HTTPServerLimits(maxBodyBytes: 1024))
        let fd = LoopbackHTTP.connect(server.port)
        defer { close(fd) }
        LoopbackHTTP.send(fd, "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        var got = [UInt8](repeating: 0, count: 64)
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        XCTAssertEqual(poll(&p, 1, 5000), 1)
        let n = recv(fd, &got, got.count, 0)
        XCTAssertTrue(String(decoding: got[0..<max(0, n)], as: UTF8.self).hasPrefix("HTTP/1.1 100 Continue\r\n\r\n"))
        LoopbackHTTP.send(fd, "hello")
        XCTAssertTrue(LoopbackHTTP.readReply(fd, timeout: 5).text.hasSuffix("len=5\n"))
    }

    func testOversizedHeadersAreRefused() throws {
        let called = Atomic<Int>(0)
        let server = try serve(HTTPServerLimits(maxHeaderBytes: 4096, maxHeaderCount: 20)) { _ in
            called.wrappingAdd(1, ordering: .relaxed)
            return .text("ok\n")
        }
        let long = LoopbackHTTP.request(server.port, "GET / HTTP/1.1\r\nHost: x\r\nX-Long: " + String(repeating: "a", count: 20_000) + "\r\n\r\n")
        XCTAssertTrue(long.hasPrefix("HTTP/1.1 431 "), long)
        // No terminator at all: refused as soon as the cap is passed, not at the deadline.
        let endless = LoopbackHTTP.request(server.port, "GET / HTTP/1.1\r\nX-Long: " + String(repeating: "b", count: 8000))
        XCTAssertTrue(endless.hasPrefix("HTTP/1.1 431 "), endless)
        let many = (0..<40).map { "X-H\($0): v\r\n" }.joined()
        XCTAssertTrue(LoopbackHTTP.request(server.port, "GET / HTTP/1.1\r\nHost: x\r\n" + many + "\r\n").hasPrefix("HTTP/1.1 431 "))
        XCTAssertTrue(LoopbackHTTP.request(server.port, "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n").hasPrefix("HTTP/1.1 400 "), "two Host headers")
        XCTAssertTrue(LoopbackHTTP.request(server.port, "GET / HTTP/1.1\r\nHost: a\u{0}b\r\n\r\n").hasPrefix("HTTP/1.1 400 "), "NUL in a header")
        XCTAssertEqual(called.load(ordering: .relaxed), 0)
        XCTAssertEqual(server.rejections[.headerTooLarge], 3)
        XCTAssertTrue(LoopbackHTTP.request(server.port, "GET / HTTP/1.1\r\nHost: x\r\n\r\n").hasPrefix("HTTP/1.1 200 "))
    }

    /// A head ended by LF LF alone (no CR) never ended for the parser and held its slot until the request
    /// timeout (408 after 10 s). Now 400 at once; a mix of LF and CR LF is refused as before.
    func testAHeadEndedByBareLFIsRefusedAtOnce() throws {
        let server = try serve(HTTPServerLimits(requestTimeoutS: 30))
        // Before, this waited for the request timeout and got 408.
        let reply = LoopbackHTTP.request(server.port, "GET /healthz HTTP/1.1\nHost: x\n\n", timeout: 20)
        XCTAssertTrue(reply.hasPrefix("HTTP/1.1 400 "), reply)
        XCTAssertTrue(reply.contains("LF alone"), reply)
        XCTAssertTrue(LoopbackHTTP.request(server.port, "GET / HTTP/1.1\nHost: x\r\n\r\n").hasPrefix("HTTP/1.1 400 "))
        XCTAssertTrue(LoopbackHTTP.request(server.port, "GET / HTTP/1.1\r\nHost: x\r\n\r\n").hasPrefix("HTTP/1.1 200 "))
    }

    func testSlowlorisIsCutOffAtTheTotalDeadlineWhileOthersAreServed() throws {
        let deadline = 1.5
        let server = try serve(HTTPServerLimits(maxConnections: 8, requestTimeoutS: deadline))
        let fd = LoopbackHTTP.connect(server.port)
        defer { close(fd) }
        let started = Date()
        XCTAssertTrue(LoopbackHTTP.send(fd, "GET /healthz HTTP/1.1\r\n"))
        var servedMeanwhile = false
        var cutAt: Double?
        var reply = [UInt8]()
        // One header byte every 50 ms: each read gets data, so only a total deadline ends it. At most 10 s.
        for i in 0..<200 {
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            if poll(&p, 1, 50) > 0 {
                var buf = [UInt8](repeating: 0, count: 4096)
                let n = recv(fd, &buf, buf.count, 0)
                if n > 0 { reply.append(contentsOf: buf[0..<n]) }
                if n <= 0 || reply.count > 0 { cutAt = Date().timeIntervalSince(started); break }
            }
            if !LoopbackHTTP.send(fd, [i % 2 == 0 ? UInt8(ascii: "X") : UInt8(ascii: "y")]) { cutAt = Date().timeIntervalSince(started); break }
            if i == 5 { servedMeanwhile = Self.healthz(server.port) }
        }
        XCTAssertTrue(servedMeanwhile, "another client is served while the slow one trickles")
        guard let cutAt else { return XCTFail("the trickling client was never cut off") }
        XCTAssertGreaterThanOrEqual(cutAt, deadline - 0.1)
        XCTAssertLessThan(cutAt, deadline + 3, "cut off near the \(deadline) s deadline, not per read")
        if !reply.isEmpty { XCTAssertTrue(String(decoding: reply, as: UTF8.self).hasPrefix("HTTP/1.1 408 ")) }
        XCTAssertTrue(Self.waitFor(5) { server.rejections[.timeout] == 1 })
        XCTAssertTrue(Self.waitFor(5) { server.activeConnections == 0 })
    }

    func testRandomBytesAndPartialRequestsNeverStopTheServer() throws {
        let server = try serve(HTTPServerLimits(maxConnections: 8, maxHeaderBytes: 2048, maxHeaderCount: 16, maxBodyBytes: 512, requestTimeoutS: 1))
        var rng = SplitMix64(seed: 0x4879_6472_6131_3400)
        let fragments: [String] = [
            "GET / HTTP/1.1\r\n", "POST /x HTTP/1.1\r\n", "GET /healthz?x=%zz HTTP/1.0\r\n", "Host: 127.0.0.1\r\n", "Host: a\r\nHost: b\r\n",
            "Content-Length: 5\r\n", "Content-Length: 99999999999999999999\r\n", "Content-Length: -3\r\n", "Content-Length: 600\r\n",
            "Transfer-Encoding: chunked\r\n", "Expect: 100-continue\r\n", " folded\r\n", "NoColon\r\n", ": empty\r\n",
            "X: \u{0}\r\n", "\r\n", "\r\n\r\n", "hello", "\n", "\r", "GET  HTTP/1.1\r\n", "\u{FEFF}GET / HTTP/1.1\r\n", "GET http://evil/ HTTP/1.1\r\n",
            String(repeating: "A", count: 3000), "X-Ü: é\r\n", "GET /\u{1F600} HTTP/1.1\r\n",
        ]
        let okPrefixes = ["HTTP/1.1 200 ", "HTTP/1.1 400 ", "HTTP/1.1 404 ", "HTTP/1.1 408 ", "HTTP/1.1 411 ", "HTTP/1.1 413 ",
                          "HTTP/1.1 431 ", "HTTP/1.1 503 ", "HTTP/1.1 100 "]
        for i in 0..<160 {
            let fd = LoopbackHTTP.connect(server.port)
            XCTAssertGreaterThanOrEqual(fd, 0)
            var bytes = [UInt8]()
            for _ in 0..<Int(rng.next() % 6) + 1 {
                if rng.next() % 3 == 0 {
                    bytes += (0..<Int(rng.next() % 300)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
                } else {
                    bytes += Array(fragments[Int(rng.next() % UInt64(fragments.count))].utf8)
                }
            }
            if rng.next() % 4 == 0 { bytes = Array(bytes.prefix(Int(rng.next() % UInt64(bytes.count + 1)))) }
            LoopbackHTTP.send(fd, bytes)
            // Half-close so the server sees the end instead of waiting for its deadline; sometimes drop at once.
            if rng.next() % 5 == 0 { close(fd); continue }
            shutdown(fd, Int32(SHUT_WR))
            let reply = LoopbackHTTP.readReply(fd, timeout: 5)
            close(fd)
            XCTAssertTrue(reply.closed, "iteration \(i): the server closed the connection")
            if !reply.text.isEmpty {
                XCTAssertTrue(okPrefixes.contains { reply.text.hasPrefix($0) }, "iteration \(i): \(reply.text.prefix(80))")
            }
            if i % 40 == 39 { XCTAssertTrue(Self.waitFor(10) { Self.healthz(server.port) }, "iteration \(i): /healthz") }
        }
        XCTAssertTrue(Self.waitFor(10) { Self.healthz(server.port) })
        XCTAssertTrue(Self.waitFor(10) { server.activeConnections == 0 })
        XCTAssertLessThanOrEqual(server.peakConnections, 8)
    }

    func testLimitsFromEnvironment() {
        let l = HTTPServerLimits.fromEnvironment(HTTPServerLimits(maxBodyBytes: 7), environment: [
            "HYDRA_HTTP_MAX_CONNECTIONS": "12", "HYDRA_HTTP_MAX_HEADER_BYTES": "8192", "HYDRA_HTTP_REQUEST_TIMEOUT_S": "2.5",
        ])
        XCTAssertEqual(l.maxConnections, 12)
        XCTAssertEqual(l.maxHeaderBytes, 8192)
        XCTAssertEqual(l.requestTimeoutS, 2.5)
        XCTAssertEqual(l.maxBodyBytes, 7)
        let bad = HTTPServerLimits.fromEnvironment(environment: ["HYDRA_HTTP_MAX_CONNECTIONS": "lots", "HYDRA_HTTP_MAX_BODY_BYTES": "-5"])
        XCTAssertEqual(bad.maxConnections, 64)
        XCTAssertEqual(bad.maxBodyBytes, 1 << 20)
    }

    func testRejectionsAreCountedInTheRegistry() throws {
        let registry = MetricsRegistry()
        let s = MiniHTTPServer(port: 0, limits: HTTPServerLimits(maxHeaderBytes: 1024),
                               onReject: MiniHTTPServer.rejectionCounter(registry, server: "agent")) { _ in .text("ok\n") }
        let port = try s.start()
        defer { s.stop() }
        XCTAssertTrue(LoopbackHTTP.request(port, "GET / HTTP/1.1\r\nX: " + String(repeating: "z", count: 3000) + "\r\n\r\n").hasPrefix("HTTP/1.1 431 "))
        XCTAssertEqual(registry.value("hydra_http_rejected_total", ["agent", "header_too_large"]), 1)
        XCTAssertEqual(registry.value("hydra_http_rejected_total", ["agent", "connections"]), 0)
        XCTAssertTrue(registry.render().contains("hydra_http_rejected_total{server=\"agent\",reason=\"header_too_large\"} 1"))
    }
}
