import ComityAPI
import ComityCore
import Foundation
import Logging
import Subprocess
import Synchronization

#if canImport(System)
import System
#else
import SystemPackage
#endif

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Runs jobs that name an `image:` in a `podman` container with the job's limits; other jobs run as processes.
///
/// `podman run` runs attached, through the process runner (``JobRunner``, without cgroups of its own: podman puts
/// the container in its cgroup), so output, stops (`SIGTERM`, proxied into the container, then `SIGKILL`) and the
/// run-time limit work as for a process. The container is named `comity-<attempt>` and is not started with `--rm`:
/// after it ends, the runner reads `State.OOMKilled` from `podman inspect` (an OOM kill is reported as
/// ``JobRunner/Outcome/oomKilled(_:)``) and then removes it with `podman rm --force`, which also ends a container
/// whose `podman run` was killed.
package struct ContainerRunner: JobExecutor {
    package struct Configuration: Sendable {
        /// The `podman` executable.
        package var podman: String
        /// Time between `SIGTERM` and `SIGKILL` when a job is stopped.
        package var killGrace: Duration
        /// The container's `--pids-limit`.
        package var pidsLimit = 4096
        /// How output is cut into chunks.
        package var logs = LogBatcher.Configuration()

        package init(podman: String, killGrace: Duration = .seconds(10)) {
            self.podman = podman
            self.killGrace = killGrace
        }
    }

    package var configuration: Configuration
    /// Runs the jobs that name no image.
    package var process: JobRunner
    package var logger: Logger

    package init(configuration: Configuration, process: JobRunner, logger: Logger) {
        self.configuration = configuration
        self.process = process
        self.logger = logger
    }

    /// Variables of the job's environment that stay outside the container (the image has its own).
    static let hostOnlyVariables: Set<String> = ["PATH", "HOME", "LANG"]

    package func run(
        _ job: JobRunner.Job,
        control: JobControl,
        onStart: @escaping @Sendable (Int32) async -> Void,
        sink: @escaping @Sendable (LogAppend) async -> Void
    ) async -> JobRunner.Outcome {
        guard let image = job.image else {
            return await process.run(job, control: control, onStart: onStart, sink: sink)
        }
        if let reason = control.stopReason { return .stopped(reason) }
        let name = "comity-\(job.attempt)"
        // A container of the same name left by an agent that died is in the way.
        _ = await Self.podman(configuration.podman, ["rm", "--force", "--ignore", name])

        var podmanJob = job
        podmanJob.command =
            [configuration.podman]
            + Self.runArguments(for: job, image: image, name: name, pidsLimit: configuration.pidsLimit)
        var runnerConfiguration = JobRunner.Configuration(killGrace: configuration.killGrace)
        runnerConfiguration.logs = configuration.logs
        let runner = JobRunner(configuration: runnerConfiguration, logger: logger)
        let lastError = Mutex<String>("")
        let outcome = await runner.run(podmanJob, control: control, onStart: onStart) { chunk in
            if chunk.stream == .stderr, let line = chunk.data.split(separator: "\n").last {
                lastError.withLock { $0 = String(line) }
            }
            await sink(chunk)
        }

        let inspected = await Self.podman(configuration.podman, ["inspect", "--format", "{{.State.OOMKilled}}", name])
        let removed = await Self.podman(configuration.podman, ["rm", "--force", "--ignore", name])
        if removed.status != 0 {
            logger.warning("cannot remove the job's container", metadata: ["container.name": "\(name)", "error": "\(removed.output)"])
        }
        if inspected.status == 0, inspected.output.trimmingCharacters(in: .whitespacesAndNewlines) == "true",
            case .exited(let code) = outcome, code != 0
        {
            let limit = job.resources.map { Quantity.formatBytes($0.memoryBytes) } ?? "unknown"
            return .oomKilled("memory limit \(limit) exceeded")
        }
        // 125: podman itself failed (no such image, no runtime, …); its reason is the last line it printed.
        if case .exited(125) = outcome, inspected.status != 0 {
            let reason = lastError.withLock { $0 }
            return .failed("podman could not run image \(image): \(reason.isEmpty ? "exit status 125" : reason)")
        }
        return outcome
    }

    /// The arguments of `podman run` for `job` (after the executable).
    ///
    /// The work folder is mounted at the same path and is the working directory; the job's variables go in with
    /// `--env NAME` (values from podman's environment, so they do not show on a command line), except
    /// ``hostOnlyVariables``; GPUs by CDI name (`nvidia.com/gpu=<uuid>`); no network unless the job has it.
    package static func runArguments(
        for job: JobRunner.Job,
        image: String,
        name: String,
        pidsLimit: Int
    ) -> [String] {
        var arguments = ["run", "--name", name, "--sig-proxy=true"]
        if let resources = job.resources {
            if resources.memoryBytes > 0 {
                arguments += ["--memory", "\(resources.memoryBytes)b", "--memory-swap", "\(resources.memoryBytes)b"]
            }
            if resources.cpuMillis > 0 { arguments += ["--cpus", Quantity.formatCPUs(resources.cpuMillis)] }
        }
        arguments += ["--pids-limit", String(pidsLimit)]
        arguments += ["--volume", "\(job.workDirectory):\(job.workDirectory)", "--workdir", job.workDirectory]
        arguments += ["--network", job.network ? "host" : "none"]
        for variable in job.environment.keys.sorted() where !hostOnlyVariables.contains(variable) {
            arguments += ["--env", variable]
        }
        for device in job.gpuDevices where !device.isEmpty { arguments += ["--device", "nvidia.com/gpu=\(device)"] }
        return arguments + [image] + job.command
    }

    /// Finds `podman` in `PATH` (and the usual folders).
    package static func locate(environment: [String: String] = ProcessInfo.processInfo.environment) -> String? {
        Inventory.findOnPath("podman", path: (environment["PATH"] ?? "") + ":/usr/bin:/usr/local/bin:/bin")
    }

    /// Runs one short podman command with the agent's environment, for at most `timeout`; returns its exit status
    /// (124 when it took longer, 127 when it could not start) and its output (standard output and error together).
    static func podman(
        _ podman: String,
        _ arguments: [String],
        timeout: Duration = .seconds(60)
    ) async -> (status: Int32, output: String) {
        await withTaskGroup(of: (status: Int32, output: String)?.self) { group in
            group.addTask {
                do {
                    let result = try await Subprocess.run(
                        .path(FilePath(podman)),
                        arguments: Arguments(arguments),
                        input: .none,
                        output: .string(limit: 64 * 1024),
                        error: .string(limit: 64 * 1024)
                    )
                    let status: Int32 =
                        switch result.terminationStatus {
                        case .exited(let code): code
                        case .signaled(let signal): 128 + signal
                        }
                    return (status, result.standardOutput + result.standardError)
                } catch {
                    return (127, "\(error)")
                }
            }
            group.addTask {
                try? await Task.sleep(for: timeout)
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first ?? (124, "timed out after \(timeout)")
        }
    }

    /// Runs a short helper process synchronously, its output in a temporary file (no pipe to fill), for at most
    /// `timeout`; status 124 when it took longer, 127 when it could not start.
    package static func runSync(_ arguments: [String], timeout: Duration) -> (status: Int32, output: String) {
        let file = NSTemporaryDirectory() + "comity-podman-\(getpid())-\(UInt64.random(in: 0...UInt64.max)).out"
        defer { unlink(file) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, file, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, arguments[0], &actions, nil, &argv, environ)
        guard spawned == 0 else { return (127, String(cString: strerror(spawned))) }
        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: timeout)
        var status: Int32 = 0
        while waitpid(pid, &status, WNOHANG) == 0 {
            if clock.now >= deadline {
                kill(pid, SIGKILL)
                waitpid(pid, &status, 0)
                return (124, "timed out after \(timeout)")
            }
            usleep(10_000)
        }
        let output = (try? String(contentsOfFile: file, encoding: .utf8)) ?? ""
        // WIFEXITED/WEXITSTATUS are macros Swift cannot import.
        let code = status & 0x7f == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        return (code, output)
    }

    /// Whether this host can offer the container runner.
    package enum Availability: Sendable, Hashable {
        case works(podman: String)
        /// Why not, as the inventory's note.
        case unavailable(String)
    }

    /// Whether podman is installed, without running it (for hosts whose runner is another one).
    package static func found(environment: [String: String] = ProcessInfo.processInfo.environment) -> Availability {
        locate(environment: environment).map { .works(podman: $0) } ?? .unavailable("container: podman not found")
    }

    /// Finds podman and checks that it answers `podman info` (a container is not started: that needs an image).
    package static func probe(
        environment: [String: String] = ProcessInfo.processInfo.environment,
        timeout: Duration = .seconds(20)
    ) -> Availability {
        guard let podman = locate(environment: environment) else { return .unavailable("container: podman not found") }
        let info = runSync([podman, "info", "--format", "{{.Host.OCIRuntime.Name}}"], timeout: timeout)
        guard info.status == 0 else {
            let why = info.output.split(separator: "\n").last.map(String.init) ?? "exit status \(info.status)"
            return .unavailable("container: podman info failed: \(why)")
        }
        return .works(podman: podman)
    }
}
