import ComityCore
import Foundation

/// Finds out how this host can run jobs: which runners work here and what enforces limits.
///
/// The agent reports the answer in its inventory (``HostRuntime``); the scheduler reads the configured runner (e.g.
/// jobs with non-public data go only to sandboxed hosts), and `comity hosts` shows it.
package enum RuntimeProbe {
    /// Probes the host for a configured `runner`.
    ///
    /// - Parameter slurm: what ``SlurmPartition/probe(partition:commands:)`` found, when a partition is configured.
    package static func detect(runner: RunnerKind, slurm: SlurmPartition.Probe? = nil) -> HostRuntime {
        var runtime = HostRuntime(runner: runner, available: [.process])
        addSlurm(slurm, to: &runtime)
        if runner != .process, !runtime.available.contains(runner) {
            runtime.notes.append("\(runner.rawValue): not available on this host")
        }
        return runtime
    }

    /// The slurm runner is available when `sinfo` answers for the configured partition; otherwise a note says why.
    static func addSlurm(_ probe: SlurmPartition.Probe?, to runtime: inout HostRuntime) {
        switch probe {
        case nil: break
        case .answers: runtime.available.append(.slurm)
        case .unavailable(let reason): runtime.notes.append(reason)
        }
    }
}
