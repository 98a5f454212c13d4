import Synchronization

/// The attempts this agent holds right now, from assignment until their finish is reported.
package final class AttemptRegistry: Sendable {
    private struct State {
        var controls: [Int64: JobControl] = [:]
        var isClosed = false
    }

    private let state = Mutex(State())

    package init() {}

    /// Adds an attempt; `nil` when it is already held (a repeated assignment) or the registry is closed for shutdown.
    package func register(_ attempt: Int64) -> JobControl? {
        state.withLock { state in
            guard !state.isClosed, state.controls[attempt] == nil else { return nil }
            let control = JobControl()
            state.controls[attempt] = control
            return control
        }
    }

    package func remove(_ attempt: Int64) {
        _ = state.withLock { $0.controls.removeValue(forKey: attempt) }
    }

    /// The attempts held, in ascending order (what a heartbeat reports).
    package var attempts: [Int64] { state.withLock { $0.controls.keys.sorted() } }

    /// Asks the given attempts to stop; ids not held are ignored.
    ///
    /// - Returns: the attempts that were asked (first request).
    @discardableResult
    package func stop(_ attempts: [Int64], reason: StopReason) -> [Int64] {
        let controls = state.withLock { state in attempts.compactMap { id in state.controls[id].map { (id, $0) } } }
        return controls.filter { $0.1.stop(reason) }.map(\.0)
    }

    /// Refuses new attempts and asks every held one to stop for shutdown.
    package func close() {
        let controls = state.withLock { state in
            state.isClosed = true
            return Array(state.controls.values)
        }
        for control in controls { control.stop(.shutdown) }
    }

    package var isClosed: Bool { state.withLock { $0.isClosed } }
}
