import ServiceLifecycle
import Synchronization

/// Wakes long-polling requests when PostgreSQL says something changed.
///
/// Every key has a generation counter. A waiter reads the generation, checks the database, and only then waits for
/// the generation to move, so a notification that lands between the check and the wait is never missed.
package final class Notifier: Sendable {
    package enum Key: Hashable, Sendable {
        /// New assignments or attempts to stop for a host.
        case host(Int64)
        /// A job's state or log changed.
        case job(Int64)
        /// The scheduler has something to look at.
        case scheduler
    }

    private struct State {
        var generations: [Key: UInt64] = [:]
        var waiters: [Key: [Int: CheckedContinuation<Void, Never>]] = [:]
        var cancelled: Set<Int> = []
        var nextID = 0
        var isShutDown = false
    }

    private let state = Mutex(State())

    package init() {}

    package func generation(of key: Key) -> UInt64 {
        state.withLock { $0.generations[key, default: 0] }
    }

    /// Marks `key` changed and wakes its waiters.
    package func notify(_ key: Key) {
        let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.generations[key, default: 0] &+= 1
            return Array((state.waiters.removeValue(forKey: key) ?? [:]).values)
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Marks every key with waiters changed (used after the listening connection was re-established, when
    /// notifications may have been missed).
    package func notifyAll() {
        let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            for key in state.waiters.keys { state.generations[key, default: 0] &+= 1 }
            state.generations[.scheduler, default: 0] &+= 1
            defer { state.waiters.removeAll() }
            return state.waiters.values.flatMap(\.values)
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Wakes every waiter and makes later waits return at once: the server is shutting down, and long-polls should
    /// answer now rather than hold graceful shutdown for their full wait.
    package func shutDown() {
        state.withLock { $0.isShutDown = true }
        notifyAll()
    }

    /// Whether long-polls should answer now: this notifier was shut down, or the caller's task is shutting down.
    package var isShutDown: Bool { state.withLock { $0.isShutDown } || Task.isShuttingDownGracefully }

    /// Returns when `key`'s generation differs from `generation`, or after `timeout`, or on cancellation.
    package func wait(for key: Key, since generation: UInt64, timeout: Duration) async {
        // A request's task sees the server's graceful shutdown: every waiter answers now rather than hold it. (The
        // handler is a plain callback: no extra task per wait, which matters on the dispatch path.)
        await withGracefulShutdownHandler {
            await withTaskGroup(of: Void.self) { group in
                group.addTask { await self.waitForChange(of: key, since: generation) }
                group.addTask { try? await Task.sleep(for: timeout) }
                await group.next()
                group.cancelAll()
            }
        } onGracefulShutdown: {
            self.shutDown()
        }
    }

    private func waitForChange(of key: Key, since generation: UInt64) async {
        let id = state.withLock { state -> Int in
            state.nextID += 1
            return state.nextID
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let resumeNow = state.withLock { state -> Bool in
                    if state.generations[key, default: 0] != generation || state.cancelled.contains(id) || state.isShutDown {
                        return true
                    }
                    state.waiters[key, default: [:]][id] = continuation
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        } onCancel: {
            let continuation = state.withLock { state -> CheckedContinuation<Void, Never>? in
                state.cancelled.insert(id)
                return state.waiters[key]?.removeValue(forKey: id)
            }
            continuation?.resume()
        }
        state.withLock { _ = $0.cancelled.remove(id) }
    }
}
