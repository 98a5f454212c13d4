import ArgumentParser
import ComityAgent
import ComityCore
import Foundation
import Logging

/// `comity-agent`: runs a host's share of the Comity commons (`run`, the default), or checks the host (`doctor`).
@main
struct ComityAgentCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "comity-agent",
        abstract: "Run this host's jobs for a Comity server, or check the host.",
        discussion: """
            Without a subcommand, runs the agent: `comity-agent --state-dir DIR ...` is `comity-agent run \
            --state-dir DIR ...`.
            """,
        subcommands: [RunCommand.self, DoctorCommand.self],
        defaultSubcommand: RunCommand.self
    )
}

/// `comity-agent run` (the default subcommand): enrolls once, then runs the host's jobs until stopped.
struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run this host's jobs for a Comity server (the default).",
        discussion: """
            The first start enrolls the host with a one-time join token and keeps the credential in the state folder \
            (DIR/credential.json, mode 600); later starts need no join token. The agent only makes outbound \
            connections. SIGTERM or SIGINT stops it gracefully: running jobs are stopped and requeued.
            """
    )

    @Option(help: "Server URL, e.g. http://127.0.0.1:8700 (default: the one saved at enrollment).")
    var server: String?

    @Option(help: "One-time join token, needed only for the first start (or set COMITY_JOIN_TOKEN).")
    var joinToken: String?

    @Option(help: "State folder: credential, running-job records, work folders.")
    var stateDir: String

    @Option(help: "YAML file describing the host's resources, replacing detection.")
    var resources: String?

    @Option(help: "Host name at enrollment (default: the hostname).")
    var name: String?

    @Option(help: "Host labels at enrollment, e.g. tre=true,disk=encrypted.")
    var labels: String?

    @Option(help: "Time between SIGTERM and SIGKILL when a job is stopped, e.g. 10s, 500ms.")
    var killGrace: String = "10s"

    @Option(help: "How jobs run: process (default), sandbox (bubblewrap), slurm, container (podman).")
    var runner: RunnerKind = .process

    @Option(
        help: """
            The host name or address others reach this host's services at, put in each service replica's URL \
            (default: 127.0.0.1, reachable only from this host; set the host's reachable address).
            """
    )
    var advertiseAddress: String = "127.0.0.1"

    @Option(help: "The Slurm partition jobs are submitted to (required with --runner slurm).")
    var slurmPartition: String?

    @Option(help: "The slurm.conf Slurm's commands use (sets SLURM_CONF; default: Slurm's own).")
    var slurmConf: String?

    @Option(help: "Time between samples of a GPU job's memory and utilization (nvidia-smi), e.g. 5s, 500ms.")
    var gpuSampleInterval: String = "5s"

    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: Logger.Level = .info

    @Option(help: "A cgroup v2 folder for the jobs' cgroups (created when missing), e.g. /sys/fs/cgroup/comity, for hosts where the agent shares its own cgroup; default: the agent's own cgroup.")
    var cgroupParent: String?

    func run() async throws {
        if let cgroupParent { setenv(CGroupHierarchy.parentVariable, cgroupParent, 1) }
        let environment = ProcessInfo.processInfo.environment
        let configuration: AgentConfiguration
        do throws(AgentError) {
            configuration = AgentConfiguration(
                server: server ?? environment["COMITY_SERVER"],
                joinToken: joinToken ?? environment["COMITY_JOIN_TOKEN"],
                stateDirectory: stateDir,
                resourcesFile: resources,
                name: name,
                labels: try labels.map(AgentConfiguration.parseLabels) ?? [:],
                killGrace: try AgentConfiguration.parseGrace(killGrace),
                runner: runner,
                advertiseAddress: advertiseAddress,
                gpuSampleInterval: try GPUSampler.parseInterval(gpuSampleInterval),
                slurmPartition: slurmPartition,
                slurmConf: slurmConf
            )
            try configuration.validate()
        } catch {
            throw ValidationError(error.message)
        }

        let level = logLevel
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "comity.agent")
        let agent = AgentService(configuration: configuration, logger: logger)
        do {
            try await agent.runInServiceGroup()
        } catch let error as AgentError {
            logger.critical("agent stopped", metadata: ["error.code": "\(error.code)"])
            FileHandle.standardError.write(Data("comity-agent: error: \(error.message)\n".utf8))
            throw ExitCode(error.code == .unauthorized ? 3 : 1)
        }
    }
}

/// `comity-agent doctor`: checks this host without a server.
struct DoctorCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "doctor",
        abstract: "Check this host without a server: resources, GPUs, runners, and a GPU smoke job.",
        discussion: """
            Finds the CPUs, memory and GPUs (MIG devices included) the agent would offer, probes the runners, and \
            when a GPU is present runs a smoke job through the process runner with only the first GPU visible: a \
            CUDA matrix product when python3 imports torch, nvidia-smi otherwise. Exits 0 when every check passed \
            (warnings and skipped checks included), 1 when one failed; the report names it. \
            See docs/runtimes.md ("GPUs") for the JSON keys.
            """
    )

    @Flag(help: "Print the report as one JSON object.")
    var json = false

    @Option(help: "The runner to check: process (default), sandbox, slurm, container.")
    var runner: RunnerKind = .process

    @Option(help: "The GPU smoke job: auto (torch when importable, else nvidia-smi), torch, nvidia-smi, none.")
    var smoke: Doctor.SmokeMode = .auto

    @Option(help: "Log level of the checks' own logging (stderr): trace, debug, info, warning, error.")
    var logLevel: Logger.Level = .warning

    @Option(help: "A cgroup v2 folder for the jobs' cgroups (created when missing), e.g. /sys/fs/cgroup/comity, for hosts where the agent shares its own cgroup; default: the agent's own cgroup.")
    var cgroupParent: String?

    func run() async throws {
        if let cgroupParent { setenv(CGroupHierarchy.parentVariable, cgroupParent, 1) }
        let level = logLevel
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let doctor = Doctor(
            configuration: Doctor.Configuration(runner: runner, smoke: smoke),
            logger: Logger(label: "comity.agent.doctor")
        )
        let report = await doctor.run()
        print(json ? try report.json() : report.text)
        if !report.ok { throw ExitCode(1) }
    }
}

extension Doctor.SmokeMode: ExpressibleByArgument {}

extension Logger.Level: @retroactive ExpressibleByArgument {}
extension RunnerKind: ExpressibleByArgument {}
