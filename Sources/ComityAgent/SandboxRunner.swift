import ComityAPI
import ComityCore
import Foundation
import Logging

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Runs each job under bubblewrap (`bwrap`), through the process runner: the job's command is wrapped, so its
/// process group, cgroup limits, output and stop handling are ``JobRunner``'s.
///
/// Inside the sandbox the job sees:
/// - the host's file system read-only (`--ro-bind / /`), a fresh `/dev` (GPU device nodes only for GPU jobs) and a
///   `/proc` of its own PID namespace, where it cannot see the agent's or other jobs' processes;
/// - a private, empty `/tmp` and `/dev/shm` that disappear with it;
/// - its work folder read-write (kept after the job like any work folder), and nothing else of the agent's state
///   folder: the credential and other attempts' work folders are covered by an empty tmpfs;
/// - no network (a network namespace with only its own loopback) unless the job declares `network: true`, which the
///   rules refuse for data that forbids it (`E_NETWORK`).
///
/// The job stays in the process group the runner signals: `--die-with-parent` is not used, because bwrap would
/// then `SIGKILL` the job the moment its outer process got the group's `SIGTERM`, and a stopped job would get no
/// grace to save its work. The PID namespace ends every process of the job when its first process exits, and
/// leftovers of an agent that died are killed when it restarts (``RunningRecord``), as for the process runner.
/// `--new-session` is used only when the agent has a controlling terminal (a terminal could be fed input through
/// `TIOCSTI`); it moves the job out of the group, so such a job gets `SIGKILL` after the grace instead of `SIGTERM`.
package struct SandboxRunner: JobExecutor {
    package struct Configuration: Sendable {
        /// The `bwrap` executable, an absolute path (see ``locate(environment:)``).
        package var bwrap: String
        /// Folders a job must not see, each covered by an empty tmpfs (the job's own work folder is bound back
        /// inside): the agent's state folder, with its credential and every attempt's work folder.
        package var hidden: [String]

        package init(bwrap: String, hidden: [String]) {
            self.bwrap = bwrap
            self.hidden = hidden
        }
    }

    package var configuration: Configuration
    /// Runs the wrapped command.
    package var process: JobRunner

    package init(configuration: Configuration, process: JobRunner) {
        self.configuration = configuration
        self.process = process
    }

    /// Runs `job` in the sandbox; see ``JobRunner/run(_:control:onStart:sink:)`` for the contract.
    package func run(
        _ job: JobRunner.Job,
        control: JobControl,
        onStart: @escaping @Sendable (Int32) async -> Void,
        sink: @escaping @Sendable (LogAppend) async -> Void
    ) async -> JobRunner.Outcome {
        let program: String
        switch JobRunner.program(of: job, control: control) {
        case .success(let found): program = found
        case .failure(let refusal): return refusal.outcome
        }
        guard let resolved = Self.resolve(program, path: job.environment["PATH"], workDirectory: job.workDirectory) else {
            return .failed("cannot start \(program): command not found")
        }
        var wrapped = job
        wrapped.command = [configuration.bwrap] + arguments(for: job) + ["--", resolved] + job.command.dropFirst()
        return await process.run(wrapped, control: control, onStart: onStart, sink: sink)
    }

    /// bwrap's options for `job` (everything before `--`).
    package func arguments(for job: JobRunner.Job) -> [String] {
        let work = Self.canonical(job.workDirectory)
        var arguments = ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
        for folder in configuration.hidden.map(Self.canonical) where Self.isDirectory(folder) {
            arguments += ["--tmpfs", folder]
        }
        arguments += ["--bind", work, work]
        if !job.gpuDevices.isEmpty {
            // Which GPUs a job uses is CUDA_VISIBLE_DEVICES's business, as for the process runner; the device nodes
            // carry no index-to-UUID mapping, so all of them are bound.
            for device in Self.nvidiaDevices() { arguments += ["--dev-bind", device, device] }
        }
        if !job.network { arguments.append("--unshare-net") }
        arguments += ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--chdir", work]
        if Self.hasControllingTerminal { arguments.append("--new-session") }
        return arguments
    }

    // MARK: Paths

    /// The program as an absolute path: a name without `/` is looked up in `path` (the job's `PATH`), a relative
    /// path is taken relative to the work folder, as the process runner does; `nil` when nothing executable is there.
    static func resolve(_ program: String, path: String?, workDirectory: String) -> String? {
        if program.hasPrefix("/") { return program }
        if program.contains("/") { return workDirectory + "/" + program }
        for directory in (path ?? "/usr/local/bin:/usr/bin:/bin").split(separator: ":") where !directory.isEmpty {
            let candidate = "\(directory)/\(program)"
            var status = stat()
            if stat(candidate, &status) == 0, status.st_mode & S_IFMT == S_IFREG, access(candidate, X_OK) == 0 {
                return candidate.hasPrefix("/") ? candidate : workDirectory + "/" + candidate
            }
        }
        return nil
    }

    /// `path` without symbolic links, so bwrap mounts where the job will look; the path itself when it cannot be
    /// resolved.
    static func canonical(_ path: String) -> String {
        let absolute = path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
        guard let resolved = realpath(absolute, nil) else { return absolute }
        defer { free(resolved) }
        return String(cString: resolved)
    }

    static func isDirectory(_ path: String) -> Bool {
        var status = stat()
        return stat(path, &status) == 0 && status.st_mode & S_IFMT == S_IFDIR
    }

    /// NVIDIA's device nodes (`/dev/nvidia0`, `/dev/nvidiactl`, `/dev/nvidia-uvm`, `/dev/nvidia-caps`, …).
    static func nvidiaDevices() -> [String] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: "/dev")) ?? []
        return names.filter { $0.hasPrefix("nvidia") }.sorted().map { "/dev/" + $0 }
    }

    /// Whether the agent has a controlling terminal a job could open as `/dev/tty`.
    static let hasControllingTerminal: Bool = {
        let descriptor = open("/dev/tty", O_RDONLY | O_NOCTTY | O_CLOEXEC)
        guard descriptor >= 0 else { return false }
        close(descriptor)
        return true
    }()
}

extension SandboxRunner {
    /// Whether bubblewrap can run jobs on this host.
    package enum Availability: Sendable, Hashable {
        /// It works; the `bwrap` to use.
        case works(bwrap: String)
        /// Why not, one line for the inventory's notes and the agent's refusal to start.
        case unavailable(String)
    }

    /// The `bwrap` executable: the first in the agent's `PATH`, else `/usr/bin/bwrap`; `nil` when there is none.
    package static func locate(environment: [String: String] = ProcessInfo.processInfo.environment) -> String? {
        Inventory.findOnPath("bwrap", path: (environment["PATH"] ?? "") + ":/usr/bin:/usr/local/bin:/bin")
    }

    /// Finds bwrap and checks that it can really make a sandbox here (user or mount namespaces may be forbidden, as
    /// in many containers): runs `/bin/sh -c :` with the namespaces and mounts jobs get, for at most `timeout`.
    package static func probe(
        environment: [String: String] = ProcessInfo.processInfo.environment,
        timeout: Duration = .seconds(5)
    ) -> Availability {
        guard let bwrap = locate(environment: environment) else {
            return .unavailable("sandbox: bwrap not found (install bubblewrap)")
        }
        let arguments = [
            bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp", "--unshare-net",
            "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--", "/bin/sh", "-c", ":",
        ]
        switch Spawned.run(arguments, timeout: timeout) {
        case .exited(0, _): return .works(bwrap: bwrap)
        case .exited(let code, let errors):
            let why = errors.isEmpty ? "exit status \(code)" : errors
            return .unavailable("sandbox: \(bwrap) cannot create namespaces: \(why)")
        case .timedOut: return .unavailable("sandbox: \(bwrap) did not finish within \(timeout)")
        case .failed(let why): return .unavailable("sandbox: cannot run \(bwrap): \(why)")
        }
    }
}

/// A short-lived helper process run synchronously (the runtime probe runs outside any task), its standard error kept.
private enum Spawned {
    enum Result {
        case exited(Int32, String)
        case timedOut
        case failed(String)
    }

    static func run(_ arguments: [String], timeout: Duration) -> Result {
        var pipeEnds: [Int32] = [0, 0]
        guard pipe(&pipeEnds) == 0 else { return .failed(String(cString: strerror(errno))) }
        defer { close(pipeEnds[0]) }
        _ = fcntl(pipeEnds[0], F_SETFL, O_NONBLOCK)
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, pipeEnds[1], 2)
        posix_spawn_file_actions_addclose(&actions, pipeEnds[0])
        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, arguments[0], &actions, nil, &argv, environ)
        close(pipeEnds[1])
        guard spawned == 0 else { return .failed(String(cString: strerror(spawned))) }
        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: timeout)
        var status: Int32 = 0
        while waitpid(pid, &status, WNOHANG) == 0 {
            if clock.now >= deadline {
                kill(pid, SIGKILL)
                waitpid(pid, &status, 0)
                return .timedOut
            }
            usleep(5_000)
        }
        var output: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while output.count < 16_384 {
            let count = read(pipeEnds[0], &buffer, buffer.count)
            if count <= 0 { break }
            output += buffer[..<count]
        }
        let errors = String(decoding: output, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            .split(separator: "\n").joined(separator: "; ")
        // WIFEXITED/WEXITSTATUS are macros Swift cannot import.
        let code = status & 0x7f == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        return .exited(code, errors)
    }
}
