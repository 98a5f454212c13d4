import ComityAPI
import ComityCore
import Foundation
import Subprocess
import SystemPackage
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// What a command printed and how it ended.
struct CommandResult: Sendable, CustomStringConvertible {
    var status: Int32
    var stdout: String
    var stderr: String

    var lastLine: String { stdout.split(separator: "\n").last.map(String.init) ?? "" }
    var description: String { "exit \(status)\nstdout: \(stdout)\nstderr: \(stderr)" }
}

/// Real processes for end-to-end tests: `comity-server` in embedded-database mode, `comity-agent`s, the `comity` CLI.
///
/// Binaries come from `COMITY_BIN_DIR` (set by `ops/test`). Long-running processes are started in their own session
/// with output to log files, and stopped (and their process groups killed) by ``stop()``.
final class Pool: @unchecked Sendable {
    // Mutable state is only touched from the serialized test that owns the pool (the suite is `.serialized`).
    static let binDirectory = ProcessInfo.processInfo.environment["COMITY_BIN_DIR"]
    static var isAvailable: Bool {
        guard let binDirectory else { return false }
        return ["comity-server", "comity-agent", "comity"].allSatisfy { FileManager.default.isExecutableFile(atPath: "\(binDirectory)/\($0)") }
    }

    /// Whether bubblewrap can make a sandbox here (agents started with `--runner sandbox` refuse to start otherwise).
    static let canSandbox: Bool = {
        let bwrap = Process()
        bwrap.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        bwrap.arguments = ["bwrap", "--ro-bind", "/", "/", "--unshare-net", "--unshare-pid", "--", "/bin/sh", "-c", ":"]
        bwrap.standardOutput = FileHandle.nullDevice
        bwrap.standardError = FileHandle.nullDevice
        guard (try? bwrap.run()) != nil else { return false }
        bwrap.waitUntilExit()
        return bwrap.terminationStatus == 0
    }()

    let directory: URL
    let port: Int
    var serverPID: pid_t = 0
    var adminToken = ""
    /// A partner admin of uon (the sovereignty suite's data steward).
    var uonToken = ""
    var agents: [String: pid_t] = [:]
    /// How each agent was started (its credential is in its state folder, so a restart needs no join token).
    var agentArguments: [String: [String]] = [:]

    var server: String { "http://127.0.0.1:\(port)" }

    init() throws {
        let base = ProcessInfo.processInfo.environment["COMITY_TEST_TMPDIR"] ?? NSTemporaryDirectory()
        directory = URL(fileURLWithPath: base).appending(path: "e2e-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        chmod(directory.path, 0o755)
        port = try Self.freePort()
    }

    /// Starts a pool, lets `setUp` build its federation and agents, runs `function` with the pool as
    /// `Pool.current`, and stops everything; when anything throws, prints the server's and agents' logs first.
    static func serve(_ function: @Sendable () async throws -> Void, setUp: (Pool) async throws -> Void) async throws {
        let pool = try Pool()
        do {
            try await pool.start()
            try await setUp(pool)
            try await Pool.$current.withValue(pool) { try await function() }
        } catch {
            print("--- server log ---\n\(pool.log("server.log").suffix(4000))")
            for name in pool.agents.keys.sorted() { print("--- agent \(name) ---\n\(pool.log("agent-\(name).log").suffix(2000))") }
            await pool.stop()
            throw error
        }
        await pool.stop()
    }

    /// Starts the server with short leases so that lost agents are noticed within seconds.
    func start() async throws {
        serverPID = try await spawn(
            "comity-server",
            ["serve", "--data-dir", directory.appending(path: "server").path, "--listen", "127.0.0.1:\(port)",
             "--lease", "4s", "--heartbeat", "1s", "--host-timeout", "5s"],
            log: "server.log")
        let tokenFile = directory.appending(path: "server/admin.token")
        try await eventually("the server answers /readyz and wrote admin.token", timeout: .seconds(90)) {
            guard FileManager.default.fileExists(atPath: tokenFile.path) else { return false }
            let ready = try await self.run("/usr/bin/curl", ["-fsS", "\(self.server)/readyz"])
            return ready.status == 0
        }
        adminToken = try String(contentsOf: tokenFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Runs the `comity` CLI against this pool.
    func cli(_ arguments: [String], token: String? = nil) async throws -> CommandResult {
        try await run(
            "\(Self.binDirectory!)/comity", arguments,
            environment: ["COMITY_SERVER": server, "COMITY_TOKEN": token ?? adminToken])
    }

    /// Runs the CLI and requires success; returns its output.
    @discardableResult
    func cliOK(_ arguments: [String], token: String? = nil, sourceLocation: SourceLocation = #_sourceLocation) async throws -> CommandResult {
        let result = try await cli(arguments, token: token)
        try #require(result.status == 0, "comity \(arguments.joined(separator: " ")) failed: \(result)", sourceLocation: sourceLocation)
        return result
    }

    /// The job as `comity job ID --output json` shows it.
    func job(_ id: Int64, token: String? = nil) async throws -> JobView {
        let result = try await cliOK(["job", String(id), "--output", "json"], token: token)
        return try WireJSON.decoder().decode(JobView.self, from: Data(result.stdout.utf8))
    }

    /// Waits until the job is in one of `states`.
    @discardableResult
    func waitFor(_ id: Int64, _ states: Set<JobState>, timeout: Duration = .seconds(60)) async throws -> JobView {
        var last: JobView?
        try await eventually("job \(id) reaches \(states.map(\.rawValue).sorted())", timeout: timeout, detail: { "last seen: \(String(describing: last?.state)) \(last?.reason ?? "")" }) {
            last = try await self.job(id)
            return states.contains(last!.state)
        }
        return last!
    }

    /// Enrolls and starts an agent with simulated resources (a `--resources` YAML file); `runner` is its `--runner`
    /// (`.sandbox` really runs its jobs under bubblewrap, and only such hosts take jobs with non-public data).
    func startAgent(_ name: String, partner: String, region: String, resources: String, runner: RunnerKind = .process) async throws {
        let join = try await cliOK(["hosts", "join-token", "--partner", partner, "--region", region])
        let file = directory.appending(path: "\(name).yaml")
        try resources.write(to: file, atomically: true, encoding: .utf8)
        let arguments = ["--server", server, "--state-dir", directory.appending(path: "agents/\(name)").path,
                         "--resources", file.path, "--name", name, "--kill-grace", "2s", "--runner", runner.rawValue]
        agentArguments[name] = arguments
        agents[name] = try await spawn("comity-agent", arguments + ["--join-token", join.lastLine], log: "agent-\(name).log")
        try await eventually("agent \(name) is enrolled and active") {
            let hosts = try await self.cliOK(["hosts", "--output", "json"])
            return hosts.stdout.contains("\"\(name)\"") && hosts.stdout.contains("active")
        }
    }

    /// Starts a stopped agent again with its enrolled identity, and waits until its host is active.
    func restartAgent(_ name: String) async throws {
        let arguments = try #require(agentArguments[name], "agent \(name) was never started")
        agents[name] = try await spawn("comity-agent", arguments, log: "agent-\(name).log")
        try await eventually("agent \(name) is active again") {
            let hosts = try WireJSON.decoder().decode([HostView].self, from: Data(try await self.cliOK(["hosts", "--output", "json"]).stdout.utf8))
            return hosts.contains { $0.name == name && $0.state == .active }
        }
    }

    /// Kills an agent with SIGKILL (no chance to report anything).
    func killAgent(_ name: String) {
        if let pid = agents.removeValue(forKey: name) { kill(pid, SIGKILL) }
    }

    func log(_ name: String) -> String {
        (try? String(contentsOf: directory.appending(path: name), encoding: .utf8)) ?? ""
    }

    /// Stops agents, then the server (which stops its PostgreSQL), and removes the folder.
    func stop() async {
        for pid in agents.values { kill(pid, SIGTERM) }
        for pid in agents.values { await waitExit(pid) }
        if serverPID > 0 {
            kill(serverPID, SIGTERM)
            await waitExit(serverPID)
        }
        try? FileManager.default.removeItem(at: directory)
    }

    // MARK: Processes

    func run(_ program: String, _ arguments: [String], environment: [String: String] = [:]) async throws -> CommandResult {
        var env: [Environment.Key: String?] = [:]
        for (key, value) in environment { env[Environment.Key(stringLiteral: key)] = value }
        let result = try await Subprocess.run(
            .path(FilePath(program)), arguments: Arguments(arguments), environment: .inherit.updating(env),
            output: .string(limit: 8 << 20), error: .string(limit: 8 << 20))
        let status: Int32
        switch result.terminationStatus {
        case .exited(let code): status = code
        case .signaled(let signal): status = 128 + signal
        }
        return CommandResult(status: status, stdout: result.standardOutput, stderr: result.standardError)
    }

    /// Starts a long-running binary in its own session, output to a log file; returns its pid.
    func spawn(_ binary: String, _ arguments: [String], log: String) async throws -> pid_t {
        let quoted = ([binary].map { "\(Self.binDirectory!)/\($0)" } + arguments).map { "'\($0.replacingOccurrences(of: "'", with: "'\\''"))'" }
        let logPath = directory.appending(path: log).path
        let result = try await run("/bin/sh", ["-c", "setsid \(quoted.joined(separator: " ")) >>'\(logPath)' 2>&1 < /dev/null & echo $!"])
        guard let pid = pid_t(result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)) else {
            throw HarnessError("could not start \(binary): \(result)")
        }
        return pid
    }

    /// Whether a process still runs (a zombie counts as gone).
    static func isRunning(_ pid: pid_t) -> Bool {
        guard kill(pid, 0) == 0 else { return false }
        let stat = (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8)) ?? ""
        guard let close = stat.lastIndex(of: ")") else { return false }
        let state = stat[stat.index(close, offsetBy: 2)...].prefix(1)
        return state != "Z" && state != "X"
    }

    func waitExit(_ pid: pid_t) async {
        try? await eventually("process \(pid) exits", timeout: .seconds(30)) { !Self.isRunning(pid) }
        if Self.isRunning(pid) { kill(pid, SIGKILL) }
    }

    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        guard bound else { throw HarnessError("no free port") }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}

struct HarnessError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// Polls `condition` until it holds or `timeout` passes (then fails the test with `what`).
func eventually(
    _ what: String, timeout: Duration = .seconds(30), interval: Duration = .milliseconds(100),
    detail: () -> String = { "" }, _ condition: () async throws -> Bool
) async throws {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try await condition() { return }
        try await Task.sleep(for: interval)
    }
    throw HarnessError("timed out after \(timeout): \(what) \(detail())")
}
