import ComityCore
import Foundation

/// Finds out how this host can run jobs: which runners work here and what enforces limits.
///
/// The agent reports the answer in its inventory (``HostRuntime``); the scheduler reads the configured runner (e.g.
/// jobs with non-public data go only to sandboxed hosts), and `comity hosts` shows it.
package enum RuntimeProbe {
    /// Probes the host for a configured `runner`.
    package static func detect(runner: RunnerKind) -> HostRuntime {
        var runtime = HostRuntime(runner: runner, available: [.process])
        if runner != .process, !runtime.available.contains(runner) {
            runtime.notes.append("\(runner.rawValue): not available on this host")
        }
        return runtime
    }
}
