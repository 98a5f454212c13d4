import Synchronization

/// Runs concurrent requests of one kind together: while a batch is being run, the requests that arrive wait and go
/// out in the next batch, which the first of them runs (no background task, no timer: an idle caller runs every
/// request at once, a busy one in batches as large as the load).
///
/// The server writes agents' starts and ends this way: a set-based statement writes many rows for about the price of
/// one (the scheduling pass writes 2,000 placements in 12 ms, while one start, writing the same rows for one job, took
/// 0.5 ms of PostgreSQL's time). The agent sends its start and end reports this way: the reports of attempts that
/// start or end while a report is on its way go out together in the next one.
///
/// A group of requests submitted together (`submit(_:)` with an array) stays in one batch, even past the limit.
package final class Batcher<Request: Sendable, Response: Sendable>: Sendable {
    package typealias Run = @Sendable ([Request]) async throws -> [Response]

    private enum Turn: Sendable {
        case lead
        case done(Result<[Response], any Error>)
    }

    private struct Waiting {
        var requests: [Request]
        var waiter: CheckedContinuation<Turn, Never>
    }

    private struct State {
        var pending: [Waiting] = []
        var running = false
    }

    private let state = Mutex(State())
    private let limit: Int
    private let run: Run

    /// - Parameters:
    ///   - limit: the most requests in one batch (a group larger than that runs alone).
    ///   - run: runs a batch; returns one response per request, in their order (or throws for all of them).
    package init(limit: Int, run: @escaping Run) {
        self.limit = max(1, limit)
        self.run = run
    }

    /// Requests waiting for the next batch (for tests).
    package var waiting: Int { state.withLock { $0.pending.reduce(0) { $0 + $1.requests.count } } }

    package func submit(_ request: Request) async throws -> Response {
        try await submit([request])[0]
    }

    /// Submits `requests` together: they run in one batch, with whatever else waits. Returns their responses in order.
    package func submit(_ requests: [Request]) async throws -> [Response] {
        guard !requests.isEmpty else { return [] }
        let turn = await withCheckedContinuation { (continuation: CheckedContinuation<Turn, Never>) in
            let lead = state.withLock { state -> Bool in
                if state.running {
                    state.pending.append(Waiting(requests: requests, waiter: continuation))
                    return false
                }
                state.running = true
                return true
            }
            if lead { continuation.resume(returning: .lead) }
        }
        if case .done(let result) = turn { return try result.get() }
        // These requests lead: they run with the groups waiting (up to the limit), then hand the lead on.
        let others = state.withLock { state -> [Waiting] in
            var count = requests.count
            var taken = 0
            while taken < state.pending.count, count + state.pending[taken].requests.count <= limit {
                count += state.pending[taken].requests.count
                taken += 1
            }
            defer { state.pending.removeFirst(taken) }
            return Array(state.pending.prefix(taken))
        }
        // Run apart from this task: if its caller goes away and the task is cancelled, the others' batch still runs
        // to the end.
        var batch = requests
        for other in others { batch += other.requests }
        let run = self.run
        let count = batch.count
        let outcome = await Task { () -> Result<[Response], any Error> in
            do {
                let responses = try await run(batch)
                precondition(responses.count == count, "a batch must answer every request")
                return .success(responses)
            } catch {
                return .failure(error)
            }
        }.value
        var offset = requests.count
        for other in others {
            let range = offset..<(offset + other.requests.count)
            other.waiter.resume(returning: .done(outcome.map { Array($0[range]) }))
            offset = range.upperBound
        }
        let next = state.withLock { state -> CheckedContinuation<Turn, Never>? in
            if state.pending.isEmpty {
                state.running = false
                return nil
            }
            return state.pending.removeFirst().waiter
        }
        next?.resume(returning: .lead)
        return try outcome.get().prefix(requests.count).map { $0 }
    }
}
