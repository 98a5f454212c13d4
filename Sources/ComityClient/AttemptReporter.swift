import ComityAPI
import ComityCore

/// Sends an agent's start and end reports together: the reports of attempts that start or end while a report is on
/// its way go out in the next one (`POST /v1/agent/reports`), so an agent that starts 64 assignments at once sends
/// one request, not 64, and one that runs one job at a time sends one request per report as before. No timer: a
/// report waits only for the one in flight.
///
/// Each call answers like ``ComityClient/start(attempt:)`` and ``ComityClient/finish(attempt:_:)``: the attempt's
/// ack, or a ``ClientError`` with status 404 when the host has no such attempt. A failed request fails every report
/// in it; callers retry as they would a single call.
public final class AttemptReporter: Sendable {
    public typealias Send = @Sendable (AttemptReports) async throws -> AttemptReportResults

    enum Item: Sendable {
        case start(Int64)
        case end(AttemptEnd)
    }

    private let batcher: Batcher<Item, AttemptReportResult>

    /// - Parameter send: sends one request (``ComityClient/report(_:)``, possibly wrapped).
    public init(limit: Int = AttemptReports.limit, send: @escaping Send) {
        batcher = Batcher(limit: min(limit, AttemptReports.limit)) { items in try await Self.run(items, send: send) }
    }

    /// Reports waiting for the request in flight to return (for tests).
    package var waiting: Int { batcher.waiting }

    public convenience init(client: ComityClient) {
        self.init { try await client.report($0) }
    }

    public func start(attempt: Int64) async throws -> AttemptAck {
        try Self.ack(try await batcher.submit(.start(attempt)))
    }

    public func finish(attempt: Int64, _ request: FinishRequest) async throws -> AttemptAck {
        try Self.ack(try await batcher.submit(.end(AttemptEnd(attempt: attempt, request))))
    }

    static func ack(_ result: AttemptReportResult) throws -> AttemptAck {
        guard let ack = result.ack else {
            throw ClientError(status: 404, code: result.error ?? "not_found", message: "no attempt \(result.attempt) on this host")
        }
        return ack
    }

    /// One request for `items`; the answers in their order.
    static func run(_ items: [Item], send: Send) async throws -> [AttemptReportResult] {
        var reports = AttemptReports()
        // Where each item's answer is: (is an end, index among its kind).
        var slots: [(end: Bool, index: Int)] = []
        slots.reserveCapacity(items.count)
        for item in items {
            switch item {
            case .start(let attempt):
                slots.append((false, reports.starts.count))
                reports.starts.append(attempt)
            case .end(let end):
                slots.append((true, reports.ends.count))
                reports.ends.append(end)
            }
        }
        let results = try await send(reports)
        guard results.starts.count == reports.starts.count, results.ends.count == reports.ends.count else {
            throw ClientError(status: 0, code: "bad_response", message: "the server answered a report with the wrong number of results")
        }
        return slots.map { $0.end ? results.ends[$0.index] : results.starts[$0.index] }
    }
}
