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
        addCGroups(CGroupHierarchy.host, to: &runtime)
        addSandbox(SandboxRunner.probe(), to: &runtime)
        addContainer(runner == .container ? ContainerRunner.probe() : ContainerRunner.found(), to: &runtime)
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

    /// The sandbox runner is available when bwrap can make a sandbox here; otherwise a note says why.
    static func addSandbox(_ availability: SandboxRunner.Availability, to runtime: inout HostRuntime) {
        switch availability {
        case .works: runtime.available.append(.sandbox)
        case .unavailable(let reason): runtime.notes.append(reason)
        }
    }

    /// The cgroup version that limits jobs (``CGroupHierarchy/host``), or a note saying why jobs run without limits.
    package static func addCGroups(_ detection: CGroupHierarchy.Detection, to runtime: inout HostRuntime) {
        switch detection {
        case .usable(let hierarchy):
            runtime.cgroups = hierarchy.version.rawValue
            let missing = CGroupHierarchy.Controller.allCases.filter { hierarchy.parents[$0] == nil }
            if !missing.isEmpty {
                let names = missing.map(\.rawValue).joined(separator: ", ")
                runtime.notes.append("cgroups: \(hierarchy.version.rawValue) without \(names); those limits are not enforced")
            }
        case .unusable(let reason):
            let limited: Set<RunnerKind> = [.process, .sandbox]
            let effect = limited.contains(runtime.runner) ? "; jobs run without limits" : ""
            runtime.notes.append("cgroups: none usable (\(reason))\(effect)")
        }
    }

    /// The container runner is available where podman is (and, when it is the configured runner, answers
    /// `podman info`); otherwise a note says why.
    package static func addContainer(_ availability: ContainerRunner.Availability, to runtime: inout HostRuntime) {
        switch availability {
        case .works: runtime.available.append(.container)
        case .unavailable(let reason): runtime.notes.append(reason)
        }
    }
}
