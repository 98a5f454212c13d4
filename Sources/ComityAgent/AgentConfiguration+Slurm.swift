import ComityCore
import Foundation

extension AgentConfiguration {
    /// Checks the Slurm settings: the slurm runner needs `--slurm-partition`; `--slurm-conf` must name a readable
    /// file.
    func validateSlurm() throws(AgentError) {
        if runner == .slurm, slurmPartition?.isEmpty ?? true {
            throw AgentError(
                .configuration,
                "--slurm-partition: required with --runner slurm (the partition the partner lends, e.g. comity)"
            )
        }
        if let slurmPartition, !SlurmPartition.isPartitionName(slurmPartition) {
            throw AgentError(
                .configuration,
                "--slurm-partition: expected letters, digits, '-', '_' or '.' (at most 128), got \"\(slurmPartition)\""
            )
        }
        if let slurmConf, !FileManager.default.isReadableFile(atPath: slurmConf) {
            throw AgentError(.configuration, "--slurm-conf: cannot read \"\(slurmConf)\"")
        }
    }

    /// How the agent runs Slurm's commands (`--slurm-conf`).
    var slurmCommands: SlurmCommands { SlurmCommands(configurationFile: slurmConf) }
}

extension AgentService {
    /// A slurm runner's capacity: the whole partition, as `sinfo` reports it (``SlurmPartition/capacity``).
    func slurmCapacity() async throws(AgentError) -> HostResources {
        let partition = configuration.slurmPartition ?? ""
        do {
            return try await SlurmPartition.capacity(partition: partition, commands: configuration.slurmCommands)
        } catch {
            throw AgentError(
                .inventory,
                "\(error) (describe the lent capacity with --resources FILE, or check --slurm-partition/--slurm-conf)"
            )
        }
    }

    /// Whether `sinfo` answers for the configured partition; `nil` when none is configured.
    func slurmProbe() async -> SlurmPartition.Probe? {
        guard let partition = configuration.slurmPartition else { return nil }
        return await SlurmPartition.probe(partition: partition, commands: configuration.slurmCommands)
    }

    /// Cancels the Slurm jobs a previous agent left behind (``SlurmRunner/cancelLeftovers(in:commands:logger:)``).
    func cancelSlurmLeftovers() async {
        await SlurmRunner.cancelLeftovers(
            in: configuration.stateDirectory,
            commands: configuration.slurmCommands,
            logger: logger
        )
    }
}
