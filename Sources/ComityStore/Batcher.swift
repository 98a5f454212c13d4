import Synchronization

/// Runs concurrent requests of one kind together: while a batch is being run, the requests that arrive wait and go
/// out in the next batch, which the first of them runs (no background task, no timer: an idle server runs every
/// request at once, a busy one in batches as large as the load).
///
/// A set-based statement writes many rows for about the price of one: the scheduling pass writes 2,000 placements
/// (attempts, jobs, events, ledger entries) in 12 ms, while one agent start, writing the same rows for one job, took
/// 0.5 ms of PostgreSQL's time. Agent starts arrive by the hundred per second.
final class Batcher<Request: Sendable, Response: Sendable>: Sendable {
    typealias Run = @Sendable ([Request]) async throws -> [Response]

    private enum Turn: Sendable {
        case lead
        case done(Result<Response, any Error>)
    }

    private struct State {
        var pending: [(request: Request, waiter: CheckedContinuation<Turn, Never>)] = []
        var running = false
    }

    private let state = Mutex(State())
    private let limit: Int
    private let run: Run

    /// - Parameters:
    ///   - limit: the most requests in one batch.
    ///   - run: runs a batch; returns one response per request, in their order (or throws for all of them).
    init(limit: Int, run: @escaping Run) {
        self.limit = max(1, limit)
        self.run = run
    }

    /// Requests waiting for the next batch (for tests).
    var waiting: Int { state.withLock { $0.pending.count } }

    func submit(_ request: Request) async throws -> Response {
        let turn = await withCheckedContinuation { (continuation: CheckedContinuation<Turn, Never>) in
            let lead = state.withLock { state -> Bool in
                if state.running {
                    state.pending.append((request, continuation))
                    return false
                }
                state.running = true
                return true
            }
            if lead { continuation.resume(returning: .lead) }
        }
        if case .done(let result) = turn { return try result.get() }
        // This request leads: it runs with everything waiting (up to the limit), then hands the lead on.
        let others = state.withLock { state in
            let taken = Array(state.pending.prefix(limit - 1))
            state.pending.removeFirst(taken.count)
            return taken
        }
        // Run apart from this request's task: if its client goes away and the task is cancelled, the others' batch
        // still runs to the end.
        let batch = [request] + others.map(\.request)
        let run = self.run
        let outcome = await Task { () -> Result<[Response], any Error> in
            do {
                let responses = try await run(batch)
                precondition(responses.count == batch.count, "a batch must answer every request")
                return .success(responses)
            } catch {
                return .failure(error)
            }
        }.value
        for (index, other) in others.enumerated() {
            other.waiter.resume(returning: .done(outcome.map { $0[index + 1] }))
        }
        let next = state.withLock { state -> CheckedContinuation<Turn, Never>? in
            if state.pending.isEmpty {
                state.running = false
                return nil
            }
            return state.pending.removeFirst().waiter
        }
        next?.resume(returning: .lead)
        return try outcome.get()[0]
    }
}
