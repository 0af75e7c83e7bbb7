import Foundation

/// Where the pages embed the SVG pictures: as images from their own routes, so a page stays
/// one query and a slow chart never holds up the table.
enum ConsoleChartsPages {
    static let occupancyFigure: HTML = """
    <figure class="occupancy"><figcaption>GPU occupancy, last hour (a bar per job on its GPU; blank = idle)</figcaption>
    <img src="/cluster/occupancy.svg?hours=1" alt="GPU occupancy over the last hour" width="900"></figure>
    """

    static func sparkline(batchID: String) -> HTML {
        "<img class=\"spark\" src=\"/batches/\(HTML.urlComponent(batchID))/rate.svg\" alt=\"jobs finished per minute\" width=\"120\" height=\"24\">"
    }
}

extension ConsoleServer {
    static let svgType = "image/svg+xml; charset=utf-8"

    func occupancySVG(hours: Double) throws -> Reply {
        let h = min(max(hours, 1.0 / 60), 48)
        let now = Date().timeIntervalSince1970
        let (rows, bars) = try pool.withStore { try $0.consoleOccupancy(since: now - h * 3600, now: now) }
        return Reply(headers: ["Content-Type": Self.svgType],
                     body: Data(ConsoleCharts.occupancy(rows: rows, bars: bars, from: now - h * 3600, to: now).utf8))
    }

    func batchRateSVG(_ id: String) throws -> Reply {
        // The id goes into a uuid cast: anything else is a 404, not a database error.
        guard UUID(uuidString: id) != nil else { throw Failure(status: 404, message: "no batch \(id)") }
        let rows = try pool.withStore { try $0.consoleFinishedPerMinute(batchID: id) }
        return Reply(headers: ["Content-Type": Self.svgType], body: Data(ConsoleCharts.sparkline(ConsoleCharts.minuteSeries(rows)).utf8))
    }
}
