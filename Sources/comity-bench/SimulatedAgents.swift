import ComityAPI
import ComityClient
import ComityCore
import Foundation
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
        let code = (error as? ClientError).map { "\($0.status) \($0.code)" } ?? String(describing: type(of: error))
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

/// The attempts one simulated agent holds (received, not yet finished): what its heartbeats renew.
final class HeldAttempts: Sendable {
    let ids = Mutex(Set<Int64>())
}

/// One simulated agent: a real API client with its host's own credential. It long-polls for assignments, starts and
/// finishes each (no-op jobs exit 0 at once), and heartbeats with the attempts it holds. The server cannot tell it
/// from `comity-agent`.
struct SimulatedAgent: Sendable {
    let host: SimulatedHost
    let client: ComityClient
    let recorder: Recorder
    static let pollSeconds = 20

    func run() async {
        let held = HeldAttempts()
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await heartbeats(held) }
            group.addTask { await work(held) }
            await group.waitForAll()
        }
    }

    private func heartbeats(_ held: HeldAttempts) async {
        let interval = max(1, host.heartbeatSeconds)
        // Spread the agents' heartbeats over the interval.
        try? await Task.sleep(for: .milliseconds(Int.random(in: 0..<(interval * 1000))))
        while !Task.isCancelled {
            let attempts = held.ids.withLock { Array($0) }
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

    private func work(_ held: HeldAttempts) async {
        var handled = Set<Int64>()
        var first = true
        while !Task.isCancelled {
            let assignments: [Assignment]
            do {
                if first {
                    recorder.pollerStarted()
                    first = false
                }
                assignments = try await client.assignments(waitSeconds: Self.pollSeconds)
            } catch {
                if Task.isCancelled { return }
                recorder.error("assignments", error)
                try? await Task.sleep(for: .milliseconds(200))
                continue
            }
            let now = Ticks.now()
            let fresh = assignments.filter { !handled.contains($0.attempt) }
            recorder.polled(batch: fresh.count)
            guard !fresh.isEmpty else { continue }
            recorder.received(fresh.map(\.jobId), at: now)
            held.ids.withLock { ids in for assignment in fresh { ids.insert(assignment.attempt) } }
            for assignment in fresh {
                if Task.isCancelled { return }
                do {
                    let ack = try await retrying { try await client.start(attempt: assignment.attempt) }
                    recorder.started(assignment.jobId, at: Ticks.now())
                    handled.insert(assignment.attempt)
                    if ack.current {
                        _ = try await retrying { try await client.finish(attempt: assignment.attempt, FinishRequest(outcome: .exited, exitCode: 0)) }
                        recorder.finished(assignment.jobId, at: Ticks.now())
                    } else {
                        recorder.error("start", BenchError("fenced"))
                    }
                } catch {
                    if Task.isCancelled { return }
                    // Not handled: the attempt is still assigned and comes back on the next poll.
                    recorder.error("start/finish", error)
                }
                held.ids.withLock { _ = $0.remove(assignment.attempt) }
            }
            if handled.count > 100_000 { handled.removeAll(keepingCapacity: true) }
        }
    }
}
