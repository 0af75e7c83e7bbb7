import XCTest
@testable import HydraConsole

final class ConsoleChartsTests: XCTestCase {
    let rows = [ConsoleCharts.Row(uuid: "GPU-a", label: "hydra-ai/0 RTX <5090>"), ConsoleCharts.Row(uuid: "GPU-b", label: "hydra-ai/1 RTX 4090")]

    func rects(_ svg: String, _ cls: String) -> [(x: Double, w: Double)] {
        let pattern = try! NSRegularExpression(pattern: "class=\"\(cls)\" x=\"([0-9.]+)\" y=\"[0-9.]+\" width=\"([0-9.]+)\"")
        return pattern.matches(in: svg, range: NSRange(svg.startIndex..., in: svg)).map { m in
            (Double(svg[Range(m.range(at: 1), in: svg)!])!, Double(svg[Range(m.range(at: 2), in: svg)!])!)
        }
    }

    func testBarsSitOnTheirTimeAndLeaveIdleGapsBlank() {
        // Window 0...100 s over a 680-pixel plot from x=220: 6.8 px per second.
        let bars = [ConsoleCharts.Bar(gpuUUID: "GPU-a", jobID: "j1", name: "tile", state: "succeeded", start: 10, end: 20),
                    ConsoleCharts.Bar(gpuUUID: "GPU-a", jobID: "j2", name: "tile", state: "succeeded", start: 50, end: 60),
                    ConsoleCharts.Bar(gpuUUID: "GPU-b", jobID: "j3", name: "long", state: "running", start: -50, end: nil),
                    ConsoleCharts.Bar(gpuUUID: "GPU-gone", jobID: "j4", name: "x", state: "failed", start: 1, end: 2)]
        let svg = ConsoleCharts.occupancy(rows: rows, bars: bars, from: 0, to: 100, width: 910)
        let done = rects(svg, "b s-succeeded")
        XCTAssertEqual(done.count, 2)
        XCTAssertEqual(done[0].x, 220 + 68, accuracy: 0.01)
        XCTAssertEqual(done[0].w, 68, accuracy: 0.01)
        XCTAssertEqual(done[1].x, 220 + 340, accuracy: 0.01)
        // The idle 30 s between them stays blank: no bar covers it.
        XCTAssertLessThan(done[0].x + done[0].w, done[1].x)
        // A running job started before the window is clipped to it and reaches now.
        let running = rects(svg, "b s-running")
        XCTAssertEqual(running.count, 1)
        XCTAssertEqual(running[0].x, 220, accuracy: 0.01)
        XCTAssertEqual(running[0].w, 680, accuracy: 0.01)
        XCTAssertFalse(svg.contains("class=\"b s-failed\""), "a GPU that is not a row draws nothing")
        XCTAssertTrue(svg.contains("hydra-ai/0 RTX &lt;5090&gt;"))
        XCTAssertFalse(svg.contains("<5090>"))
    }

    func testSparklineAndMinuteSeries() {
        XCTAssertEqual(ConsoleCharts.minuteSeries([(100, 3), (103, 1)]), [3, 0, 0, 1])
        XCTAssertEqual(ConsoleCharts.minuteSeries([(1, 1), (500, 2)], maxMinutes: 3), [0, 0, 2])
        XCTAssertEqual(ConsoleCharts.minuteSeries([]), [])
        let svg = ConsoleCharts.sparkline([0, 4, 2], width: 100, height: 24)
        XCTAssertTrue(svg.contains("points=\"0,23 50,1 100,12\""), svg)
        XCTAssertTrue(svg.contains("peak 4"))
        XCTAssertFalse(ConsoleCharts.sparkline([]).contains("polyline"))
    }
}
