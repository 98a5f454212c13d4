import ComityAPI
import ComityClient
import ComityCore
import Foundation
import NIOCore
import NIOHTTP1
import Synchronization

/// What the simulated agents saw, shared by all of them: counters for throughput and, when tracking, per-job times.
final class Recorder: Sendable {
    struct State {
        var received = 0
        var started = 0
        var finished = 0
        var lastReceived: UInt64 = 0
        var lastStarted: UInt64 = 0
        var lastFinished: UInt64 = 0
        var firstReceived: UInt64 = 0
        /// Per-job times, only while `tracking` (the dispatch phase); the lifecycle phase keeps counters only.
        var tracking = false
        var receivedAt: [Int64: UInt64] = [:]
        var startedAt: [Int64: UInt64] = [:]
        var finishedAt: [Int64: UInt64] = [:]
        var waiters: [Int64: CheckedContinuation<Bool, Never>] = [:]
        var errors: [String: Int] = [:]
        var polls = 0
        var emptyPolls = 0
        var heartbeats = 0
        var maxBatch = 0
        var pollers = 0
    }

    let state = Mutex(State())

    /// Starts a new phase: counters back to zero, per-job tracking on or off. Errors are kept (they are per run).
    func reset(tracking: Bool) {
        state.withLock { state in
            let errors = state.errors
            let pollers = state.pollers
            state = State()
            state.tracking = tracking
            state.errors = errors
            state.pollers = pollers
        }
    }

    func snapshot() -> State { state.withLock { $0 } }

    func polled(batch: Int) {
        state.withLock { state in
            state.polls += 1
            if batch == 0 { state.emptyPolls += 1 }
            state.maxBatch = max(state.maxBatch, batch)
        }
    }

    func pollerStarted() { state.withLock { $0.pollers += 1 } }

    func received(_ jobs: [Int64], at time: UInt64) {
        state.withLock { state in
            if state.received == 0 { state.firstReceived = time }
            state.received += jobs.count
            state.lastReceived = max(state.lastReceived, time)
            if state.tracking { for job in jobs { state.receivedAt[job] = time } }
        }
    }

    func started(_ job: Int64, at time: UInt64) {
        state.withLock { state in
            state.started += 1
            state.lastStarted = max(state.lastStarted, time)
            if state.tracking { state.startedAt[job] = time }
        }
    }

    func finished(_ job: Int64, at time: UInt64) {
        let waiter = state.withLock { state -> CheckedContinuation<Bool, Never>? in
            state.finished += 1
            state.lastFinished = max(state.lastFinished, time)
            guard state.tracking else { return nil }
            state.finishedAt[job] = time
            return state.waiters.removeValue(forKey: job)
        }
        waiter?.resume(returning: true)
    }

    func heartbeat() { state.withLock { $0.heartbeats += 1 } }

    func error(_ operation: String, _ error: any Error) {
        let code = (error as? ClientError).map { "\($0.status) \($0.code)" } ?? ((error as? BenchError)?.description ?? String(describing: type(of: error)))
        state.withLock { $0.errors["\(operation): \(code)", default: 0] += 1 }
    }

    /// Waits until a simulated agent has finished `job` (tracking must be on); false after `timeout`.
    func waitFinished(_ job: Int64, timeout: Duration) async -> Bool {
        let timer = Task {
            try? await Task.sleep(for: timeout)
            let waiter = state.withLock { $0.waiters.removeValue(forKey: job) }
            waiter?.resume(returning: false)
        }
        defer { timer.cancel() }
        return await withCheckedContinuation { continuation in
            let done = state.withLock { state -> Bool in
                if state.finishedAt[job] != nil { return true }
                state.waiters[job] = continuation
                return false
            }
            if done { continuation.resume(returning: true) }
        }
    }
}

/// An async counting semaphore: the driver's cap on start/finish calls in flight across all simulated agents.
final class Permits: Sendable {
    struct State {
        var available: Int
        var waiters: [CheckedContinuation<Bool, Never>] = []
        var head = 0
        var closed = false
    }

    let state: Mutex<State>

    init(_ count: Int) { state = Mutex(State(available: count)) }

    /// Waits for a permit; false once ``close()`` was called (the driver is stopping).
    func acquire() async -> Bool {
        await withCheckedContinuation { continuation in
            let answer = state.withLock { state -> Bool? in
                if state.closed { return false }
                if state.available > 0 {
                    state.available -= 1
                    return true
                }
                state.waiters.append(continuation)
                return nil
            }
            if let answer { continuation.resume(returning: answer) }
        }
    }

    func release() {
        let waiter = state.withLock { state -> CheckedContinuation<Bool, Never>? in
            if state.head < state.waiters.count {
                let waiter = state.waiters[state.head]
                state.head += 1
                if state.head > 1024, state.head * 2 > state.waiters.count {
                    state.waiters.removeFirst(state.head)
                    state.head = 0
                }
                return waiter
            }
            state.available += 1
            return nil
        }
        waiter?.resume(returning: true)
    }

    /// Wakes every waiter with false and refuses later acquires.
    func close() {
        let waiters = state.withLock { state -> ArraySlice<CheckedContinuation<Bool, Never>> in
            state.closed = true
            let rest = state.waiters[state.head...]
            state.waiters = []
            state.head = 0
            return rest
        }
        for waiter in waiters { waiter.resume(returning: false) }
    }
}

/// The part of an assignment a simulated no-op agent uses.
struct AssignmentID: Decodable, Sendable {
    var attempt: Int64
    var jobId: Int64
}

struct AssignmentIDList: Decodable, Sendable {
    var assignments: [AssignmentID]
}

/// Shared switches of the simulated agents.
final class AgentControl: Sendable {
    /// While draining (after a lifecycle time limit), agents drop what they received instead of starting it.
    let draining = Mutex(false)
    let permits: Permits
    /// Assignments received by all agents and not yet started (or dropped).
    let backlog = Mutex(0)

    init(maxInFlight: Int) { permits = Permits(maxInFlight) }
}

/// One simulated agent's bookkeeping: attempts received (ever, so that a poll answer that repeats one is not run
/// twice), held (received and not finished: what heartbeats renew) and not yet started (the backlog).
final class AgentState: Sendable {
    struct State {
        var known = Set<Int64>()
        var held = Set<Int64>()
        var unstarted = 0
        /// The poller, waiting for the backlog to drain.
        var drained: CheckedContinuation<Void, Never>?
    }

    let state = Mutex(State())

    /// One received assignment was started (or dropped); wakes the poller when it was the last.
    func oneLessUnstarted() {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            state.unstarted -= 1
            guard state.unstarted <= 0 else { return nil }
            defer { state.drained = nil }
            return state.drained
        }
        waiter?.resume()
    }

    /// Returns as soon as no received assignment waits to be started, after `timeout`, or when cancelled.
    func waitUntilDrained(timeout: Duration) async {
        let deadline = Ticks.now() + UInt64(max(0, timeout.components.seconds)) * 1_000_000_000
            + UInt64(max(0, timeout.components.attoseconds / 1_000_000_000))
        let wake: @Sendable () -> Void = { [self] in
            let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
                defer { state.drained = nil }
                return state.drained
            }
            waiter?.resume()
        }
        let timer = Task {
            try? await Task.sleep(for: timeout)
            wake()
        }
        defer { timer.cancel() }
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let now = state.withLock { state -> Bool in
                    if state.unstarted <= 0 || Task.isCancelled || Ticks.now() >= deadline { return true }
                    state.drained = continuation
                    return false
                }
                if now { continuation.resume() }
            }
        } onCancel: {
            wake()
        }
    }
}

/// One simulated agent: a real API client with its host's own credential, behaving like `comity-agent`: it
/// long-polls for assignments, starts each one and reports its end (no-op jobs exit 0 at once), and heartbeats
/// every `heartbeat_seconds` with the attempts it holds. The server cannot tell it from `comity-agent`.
///
/// Like `comity-agent`, it runs every assignment at once in its own task, and sends starts and ends through an
/// ``AttemptReporter``: what starts or ends while its report is on its way goes out in the next one. The report
/// requests of all agents together are capped by ``AgentControl/permits``: the driver measures the server's
/// throughput, not how deep a queue of requests it can hold. While it has assignments not yet started, it does not
/// long-poll (the server would answer at once with the same list), except every 15 s so that new assignments are
/// seen, and held, well within their 30 s lease.
struct SimulatedAgent: Sendable {
    let host: SimulatedHost
    let client: ComityClient
    let recorder: Recorder
    let control: AgentControl
    let reporter: AttemptReporter
    static let pollSeconds = 20

    init(host: SimulatedHost, client: ComityClient, recorder: Recorder, control: AgentControl) {
        self.host = host
        self.client = client
        self.recorder = recorder
        self.control = control
        reporter = AttemptReporter { [client, control] reports in
            guard await control.permits.acquire() else { throw CancellationError() }
            defer { control.permits.release() }
            return try await client.report(reports)
        }
    }
    /// With a backlog, poll again after this long anyway: new assignments must be held (renewed) within their lease.
    static let backlogPollNanoseconds: UInt64 = 15_000_000_000

    func run() async {
        let state = AgentState()
        let (stream, continuation) = AsyncStream<AssignmentID>.makeStream()
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await heartbeats(state) }
            group.addTask {
                await withDiscardingTaskGroup { running in
                    for await assignment in stream { running.addTask { await process(assignment, state) } }
                }
            }
            group.addTask {
                await poll(state, continuation)
                continuation.finish()
            }
            await group.waitForAll()
        }
    }

    private func heartbeats(_ state: AgentState) async {
        let interval = max(1, host.heartbeatSeconds)
        // Spread the agents' heartbeats over the interval.
        try? await Task.sleep(for: .milliseconds(Int.random(in: 0..<(interval * 1000))))
        while !Task.isCancelled {
            let attempts = state.state.withLock { Array($0.held) }
            do {
                _ = try await client.heartbeat(HeartbeatRequest(attempts: attempts))
                recorder.heartbeat()
            } catch {
                if Task.isCancelled { return }
                recorder.error("heartbeat", error)
            }
            try? await Task.sleep(for: .seconds(interval))
        }
    }

    private func poll(_ state: AgentState, _ continuation: AsyncStream<AssignmentID>.Continuation) async {
        var first = true
        var lastPoll: UInt64 = 0
        while !Task.isCancelled {
            // With a backlog, the server would answer at once with the same assignments: wait for it to drain.
            if state.state.withLock({ $0.unstarted }) > 0 {
                let elapsed = Ticks.now() - lastPoll
                if elapsed < Self.backlogPollNanoseconds {
                    await state.waitUntilDrained(timeout: .nanoseconds(Int64(Self.backlogPollNanoseconds - elapsed)))
                }
            }
            if Task.isCancelled { return }
            lastPoll = Ticks.now()
            let assignments: [AssignmentID]
            do {
                if first {
                    recorder.pollerStarted()
                    first = false
                }
                assignments = try await Self.assignmentIDs(client)
            } catch {
                if Task.isCancelled { return }
                recorder.error("assignments", error)
                try? await Task.sleep(for: .milliseconds(200))
                continue
            }
            let now = Ticks.now()
            let fresh = state.state.withLock { state -> [AssignmentID] in
                let fresh = assignments.filter { !state.known.contains($0.attempt) }
                for assignment in fresh {
                    state.known.insert(assignment.attempt)
                    state.held.insert(assignment.attempt)
                }
                state.unstarted += fresh.count
                if state.known.count > 200_000 { state.known = state.held }
                return fresh
            }
            control.backlog.withLock { $0 += fresh.count }
            recorder.polled(batch: fresh.count)
            guard !fresh.isEmpty else { continue }
            recorder.received(fresh.map(\.jobId), at: now)
            for assignment in fresh { continuation.yield(assignment) }
        }
    }

    /// GET /v1/agent/assignments, decoding only what a no-op agent needs (attempt and job ids): the spec of every
    /// assignment, repeated on every poll while it waits to be started, would cost the driver (and so the server, on
    /// the same cores) more CPU than everything else it does.
    static func assignmentIDs(_ client: ComityClient) async throws -> [AssignmentID] {
        let data = try await client.raw(
            .GET, "/v1/agent/assignments", query: ["wait": String(pollSeconds)], body: nil, timeout: .seconds(Int64(pollSeconds) + 30))
        return try idDecoder.decode(AssignmentIDList.self, from: data).assignments
    }

    static let idDecoder = WireJSON.decoder()

    private func process(_ assignment: AssignmentID, _ state: AgentState) async {
        defer { state.state.withLock { _ = $0.held.remove(assignment.attempt) } }
        if control.draining.withLock({ $0 }) {
            state.oneLessUnstarted()
            control.backlog.withLock { $0 -= 1 }
            return
        }
        do {
            let ack: AttemptAck
            do {
                ack = try await retrying { try await reporter.start(attempt: assignment.attempt) }
                state.oneLessUnstarted()
                control.backlog.withLock { $0 -= 1 }
            } catch {
                // Not started: forget it, so that the next poll (which lists it again) brings it back.
                state.state.withLock { _ = $0.known.remove(assignment.attempt) }
                state.oneLessUnstarted()
                control.backlog.withLock { $0 -= 1 }
                throw error
            }
            recorder.started(assignment.jobId, at: Ticks.now())
            guard ack.current else {
                if !control.draining.withLock({ $0 }) { recorder.error("start", BenchError("fenced")) }
                return
            }
            _ = try await retrying { try await reporter.finish(attempt: assignment.attempt, FinishRequest(outcome: .exited, exitCode: 0)) }
            recorder.finished(assignment.jobId, at: Ticks.now())
        } catch {
            if Task.isCancelled { return }
            recorder.error("start/finish", error)
        }
    }
}
