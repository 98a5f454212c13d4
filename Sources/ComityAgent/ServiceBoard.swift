import ComityAPI
import Synchronization

/// The latest status of every service replica this agent runs, which each heartbeat reports.
///
/// A change that the server must learn at once (health, URL, restarts) wakes the heartbeat loop through
/// ``changed``, so it does not wait for the next heartbeat period.
package final class ServiceBoard: Sendable {
    private let statuses = Mutex<[Int64: ServiceStatus]>([:])
    /// Signalled when a replica's health, URL or restart count changes.
    package let changed = WakeSignal()

    package init() {}

    /// Records `status` for its attempt; wakes the heartbeat when more than the message changed.
    package func update(_ status: ServiceStatus) {
        let isNotable = statuses.withLock { statuses in
            let previous = statuses.updateValue(status, forKey: status.attempt)
            return previous?.healthy != status.healthy || previous?.url != status.url
                || previous?.restarts != status.restarts
        }
        if isNotable { changed.signal() }
    }

    /// Forgets the attempt's replica (it ended).
    package func remove(_ attempt: Int64) {
        _ = statuses.withLock { $0.removeValue(forKey: attempt) }
    }

    /// The statuses of the given attempts, in ascending order of attempt.
    package func statuses(of attempts: [Int64]) -> [ServiceStatus] {
        statuses.withLock { statuses in attempts.sorted().compactMap { statuses[$0] } }
    }

    /// The status of one attempt's replica, if it runs here.
    package func status(of attempt: Int64) -> ServiceStatus? { statuses.withLock { $0[attempt] } }
}

/// A wake-up for one waiting task: ``signal()`` ends the current (or next) ``wait(for:)`` early.
///
/// Signals coalesce: several before a wait wake it once.
package final class WakeSignal: Sendable {
    private struct State {
        var isPending = false
        var waiter: CheckedContinuation<Void, Never>?
    }

    private let state = Mutex(State())

    package init() {}

    /// Wakes the waiter, or the next one when none waits now.
    package func signal() {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            if let waiter = state.waiter {
                state.waiter = nil
                return waiter
            }
            state.isPending = true
            return nil
        }
        waiter?.resume()
    }

    /// Waits until signalled or until `timeout` passes.
    ///
    /// - Returns: `true` when signalled, `false` when the time passed.
    /// - Throws: `CancellationError` when the task is cancelled.
    package func wait(for timeout: Duration) async throws -> Bool {
        let isSignalled = try await withThrowingTaskGroup(of: Bool.self) { group in
            group.addTask {
                try await Task.sleep(for: timeout)
                return false
            }
            group.addTask {
                await self.next()
                return true
            }
            defer { group.cancelAll() }
            return try await group.next() ?? false
        }
        try Task.checkCancellation()
        return isSignalled
    }

    /// Returns at the next signal (at once for a pending one) or when cancelled.
    private func next() async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let resumeNow = state.withLock { state -> Bool in
                    if state.isPending {
                        state.isPending = false
                        return true
                    }
                    if Task.isCancelled { return true }
                    // Only one task waits; a stale waiter (there should be none) is let go.
                    state.waiter?.resume()
                    state.waiter = continuation
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        } onCancel: {
            let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
                defer { state.waiter = nil }
                return state.waiter
            }
            waiter?.resume()
        }
    }
}
