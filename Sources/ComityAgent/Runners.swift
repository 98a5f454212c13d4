import ComityAPI
import ComityCore
import Logging

/// Runs one job to its end, however the host runs jobs (see ``RunnerKind``).
///
/// Every runner has the contract of ``JobRunner/run(_:control:onStart:sink:)``: a stop made before the start means
/// the job is not started; output goes to `sink` in order and is all delivered before `run` returns; `onStart`
/// gets an identifier of what was started (a process group id, or `0` where there is none on this host).
package protocol JobExecutor: Sendable {
    func run(
        _ job: JobRunner.Job,
        control: JobControl,
        onStart: @escaping @Sendable (Int32) async -> Void,
        sink: @escaping @Sendable (LogAppend) async -> Void
    ) async -> JobRunner.Outcome
}

/// A runner the host was configured with but cannot offer: every job fails with the reason.
package struct UnavailableRunner: JobExecutor {
    package var reason: String

    package init(reason: String) { self.reason = reason }

    package func run(
        _ job: JobRunner.Job,
        control: JobControl,
        onStart: @escaping @Sendable (Int32) async -> Void,
        sink: @escaping @Sendable (LogAppend) async -> Void
    ) async -> JobRunner.Outcome {
        if let reason = control.stopReason { return .stopped(reason) }
        return .failed(reason)
    }
}

extension AgentService {
    /// The runner this agent's jobs go through (``AgentConfiguration/runner``).
    func makeExecutor(logger: Logger) -> any JobExecutor {
        var processConfiguration = JobRunner.Configuration(killGrace: configuration.killGrace)
        processConfiguration.logs = LogBatcher.Configuration()
        processConfiguration.cgroups = CGroupHierarchy.host.hierarchy
        switch configuration.runner {
        case .process:
            return JobRunner(configuration: processConfiguration, logger: logger)
        case .slurm:
            var slurm = SlurmRunner.Configuration(
                partition: configuration.slurmPartition ?? "",
                commands: configuration.slurmCommands,
                killGrace: configuration.killGrace
            )
            slurm.logs = processConfiguration.logs
            return SlurmRunner(configuration: slurm, logger: logger)
        case .sandbox:
            // The agent does not start where bwrap does not work (``inventory()``); this is bwrap removed since.
            guard let bwrap = SandboxRunner.locate(environment: environment) else {
                return UnavailableRunner(reason: "the sandbox runner cannot run jobs on this host: bwrap not found")
            }
            return SandboxRunner(
                configuration: SandboxRunner.Configuration(bwrap: bwrap, hidden: [configuration.stateDirectory.path]),
                process: JobRunner(configuration: processConfiguration, logger: logger)
            )
        case .container:
            guard let podman = ContainerRunner.locate(environment: environment) else {
                return UnavailableRunner(reason: "the container runner cannot run jobs on this host: podman not found")
            }
            var container = ContainerRunner.Configuration(podman: podman, killGrace: configuration.killGrace)
            container.pidsLimit = processConfiguration.pidsLimit
            container.logs = processConfiguration.logs
            return ContainerRunner(
                configuration: container,
                process: JobRunner(configuration: processConfiguration, logger: logger),
                logger: logger
            )
        }
    }
}
