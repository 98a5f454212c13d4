import ComityAPI
import ComityCore
import Foundation
import Logging
import Synchronization
import Testing

@testable import ComityAgent

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// What bubblewrap can do here; the sandbox tests need it to work (ops/test installs bubblewrap).
private let bubblewrap = SandboxRunner.probe()
private var bwrapWorks: Bool { if case .works = bubblewrap { true } else { false } }

/// A fake agent state folder (`credential.json`, `work/<attempt>/`) whose attempts run in the sandbox.
private final class SandboxHarness: Sendable {
    let root: String
    let state: StateDirectory
    let chunks = Mutex<[LogAppend]>([])
    let control = JobControl()
    let started: AsyncStream<Int32>
    private let startedContinuation: AsyncStream<Int32>.Continuation

    init() throws {
        root = try makeTemporaryDirectory()
        state = StateDirectory(path: root + "/state")
        try state.prepare()
        try Data(#"{"token": "secret-token"}"#.utf8).write(to: URL(fileURLWithPath: state.credentialPath))
        (started, startedContinuation) = AsyncStream.makeStream(of: Int32.self)
    }

    deinit { try? FileManager.default.removeItem(atPath: root) }

    func run(
        _ script: String,
        attempt: Int64 = 2,
        network: Bool = false,
        environment: [String: String] = [:],
        grace: Duration = .seconds(5)
    ) async throws -> JobRunner.Outcome {
        guard case .works(let bwrap) = bubblewrap else { throw SandboxTestError.noBubblewrap }
        let work = try state.makeWorkDirectory(attempt: attempt)
        var fullEnvironment = ["PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"]
        fullEnvironment.merge(environment) { _, new in new }
        let runner = SandboxRunner(
            configuration: SandboxRunner.Configuration(bwrap: bwrap, hidden: [state.path]),
            process: JobRunner(configuration: JobRunner.Configuration(killGrace: grace), logger: quietLogger)
        )
        let job = JobRunner.Job(
            command: ["sh", "-c", script],
            environment: fullEnvironment,
            workDirectory: work,
            maxRuntimeSeconds: nil,
            attempt: attempt,
            network: network
        )
        return await runner.run(
            job,
            control: control,
            onStart: { [startedContinuation] pgid in startedContinuation.yield(pgid) },
            sink: { chunk in self.chunks.withLock { $0.append(chunk) } }
        )
    }

    func pgid() async -> Int32 {
        var iterator = started.makeAsyncIterator()
        return await iterator.next() ?? 0
    }

    func output(_ stream: LogStream) -> String {
        chunks.withLock { $0.filter { $0.stream == stream }.map(\.data).joined() }
    }
}

private enum SandboxTestError: Error { case noBubblewrap, socket(String) }

/// A TCP listener on 127.0.0.1 in the test process, outside any sandbox.
private final class Listener {
    let descriptor: Int32
    let port: UInt16

    init() throws {
        let socketDescriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard socketDescriptor >= 0 else { throw SandboxTestError.socket("socket: \(errno)") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(socketDescriptor, $0, length) }
        }
        guard bound == 0, listen(socketDescriptor, 8) == 0 else {
            close(socketDescriptor)
            throw SandboxTestError.socket("bind/listen: \(errno)")
        }
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(socketDescriptor, $0, &length) }
        }
        _ = fcntl(socketDescriptor, F_SETFL, O_NONBLOCK)
        descriptor = socketDescriptor
        port = UInt16(bigEndian: address.sin_port)
    }

    deinit { close(descriptor) }

    /// Connections made so far (accepted and closed now).
    func acceptAll() -> Int {
        var count = 0
        while true {
            let connection = accept(descriptor, nil, nil)
            if connection < 0 { return count }
            close(connection)
            count += 1
        }
    }
}

@Suite("Sandbox runner", .enabled(if: bwrapWorks, "bubblewrap cannot create namespaces here (install bubblewrap)"))
struct SandboxRunnerTests {
    /// bash's `/dev/tcp` connects; prints `connected` or `refused` and exits 0 or 7.
    static func connect(_ port: UInt16) -> String {
        "if bash -c 'exec 3<>/dev/tcp/127.0.0.1/\(port)' 2>/dev/null; then echo connected; else echo refused; exit 7; fi"
    }

    @Test("a job cannot open a TCP connection to a listener on 127.0.0.1 outside the sandbox")
    func noNetwork() async throws {
        let listener = try Listener()
        let harness = try SandboxHarness()
        let outcome = try await harness.run(Self.connect(listener.port))
        #expect(outcome == .exited(7))
        #expect(harness.output(.stdout) == "refused\n")
        #expect(listener.acceptAll() == 0)
    }

    @Test("the same job with network: true connects")
    func withNetwork() async throws {
        let listener = try Listener()
        let harness = try SandboxHarness()
        let outcome = try await harness.run(Self.connect(listener.port), network: true)
        #expect(outcome == .exited(0))
        #expect(harness.output(.stdout) == "connected\n")
        #expect(listener.acceptAll() == 1)
    }

    @Test("the system is read-only: /usr and /etc cannot be written")
    func readOnlySystem() async throws {
        let name = "comity-sandbox-\(UUID().uuidString)"
        let harness = try SandboxHarness()
        let outcome = try await harness.run(
            "for d in /usr /etc; do if touch $d/\(name) 2>/dev/null; then echo \"wrote $d\"; else echo \"denied $d\"; fi; done"
        )
        #expect(outcome == .exited(0))
        #expect(harness.output(.stdout) == "denied /usr\ndenied /etc\n")
        #expect(!FileManager.default.fileExists(atPath: "/usr/\(name)"))
        #expect(!FileManager.default.fileExists(atPath: "/etc/\(name)"))
    }

    @Test("/tmp is private: empty inside, and what the job writes there is not visible outside")
    func privateTmp() async throws {
        let outside = "/tmp/comity-sandbox-outside-\(UUID().uuidString)"
        let inside = "/tmp/comity-sandbox-inside-\(UUID().uuidString)"
        try Data("host".utf8).write(to: URL(fileURLWithPath: outside))
        defer { unlink(outside) }
        let harness = try SandboxHarness()
        let outcome = try await harness.run(
            "test -e \(outside) && echo sees-host-tmp; echo secret > \(inside) && cat \(inside)"
        )
        #expect(outcome == .exited(0))
        #expect(harness.output(.stdout) == "secret\n")
        #expect(!FileManager.default.fileExists(atPath: inside))
    }

    @Test("the work folder is the job's current folder, writable, and kept after the job")
    func workFolder() async throws {
        let harness = try SandboxHarness()
        let outcome = try await harness.run("pwd; echo result > out.txt; echo \"$HOME\" > /dev/null")
        #expect(outcome == .exited(0))
        let work = SandboxRunner.canonical(harness.state.workDirectory(attempt: 2))
        #expect(harness.output(.stdout) == "\(work)\n")
        let kept = try String(contentsOfFile: harness.state.workDirectory(attempt: 2) + "/out.txt", encoding: .utf8)
        #expect(kept == "result\n")
    }

    @Test("the agent's credential and other attempts' work folders are invisible")
    func stateHidden() async throws {
        let harness = try SandboxHarness()
        let other = try harness.state.makeWorkDirectory(attempt: 1)
        try Data("other job's data".utf8).write(to: URL(fileURLWithPath: other + "/data.csv"))
        let state = SandboxRunner.canonical(harness.state.path)
        let outcome = try await harness.run(
            """
            cat \(state)/work/1/data.csv 2>/dev/null && echo read-other
            cat \(state)/credential.json 2>/dev/null && echo read-credential
            ls \(state)/work
            ls \(state)
            """
        )
        #expect(outcome == .exited(0))
        #expect(harness.output(.stdout) == "2\nwork\n")
        // Outside, both are still there.
        #expect(FileManager.default.fileExists(atPath: other + "/data.csv"))
        #expect(FileManager.default.fileExists(atPath: harness.state.credentialPath))
    }

    @Test("a stopped job gets SIGTERM in the sandbox and the grace to end; its whole group is gone")
    func stop() async throws {
        let harness = try SandboxHarness()
        let clock = ContinuousClock()
        async let outcome = harness.run(
            // Saving takes a moment: the job must not be killed the instant it is asked to stop.
            "trap 'sleep 0.5; echo terminated > saved.txt; exit 0' TERM; echo ready > ready.txt; sleep 300 & wait",
            // A grace far longer than a loaded machine needs: ending before it shows the job ended on its own.
            grace: .seconds(60)
        )
        let pgid = await harness.pgid()
        #expect(pgid > 1)
        let work = harness.state.workDirectory(attempt: 2)
        #expect(await eventually { FileManager.default.fileExists(atPath: work + "/ready.txt") })
        let stopped = clock.now
        #expect(harness.control.stop(.server))
        let result = try await outcome
        #expect(result == .stopped(.server))
        #expect(clock.now - stopped < .seconds(60))
        // Nothing of the job runs any more; bwrap's PID 1, orphaned when the outer bwrap took SIGTERM, may be a
        // zombie until this machine's init reaps it (an agent reaps it itself: it is its jobs' subreaper).
        #expect(ProcessGroup.isGone(pgid))
        #expect(await eventually { isGroupGone(pgid) })
        #expect((try? String(contentsOfFile: work + "/saved.txt", encoding: .utf8)) == "terminated\n")
    }

    @Test("a job that ignores SIGTERM is killed after the grace")
    func kill() async throws {
        let harness = try SandboxHarness()
        let clock = ContinuousClock()
        async let outcome = harness.run("trap '' TERM; echo ready > ready.txt; sleep 300 & sleep 300", grace: .milliseconds(500))
        let pgid = await harness.pgid()
        let work = harness.state.workDirectory(attempt: 2)
        #expect(await eventually { FileManager.default.fileExists(atPath: work + "/ready.txt") })
        let stopped = clock.now
        harness.control.stop(.shutdown)
        #expect(try await outcome == .stopped(.shutdown))
        // Killed after the 0.5 s grace, not after `sleep 300`: the bound is far below 300 s and far above what a
        // loaded 2-core machine needs (8.5 s was seen in a full suite beside builds).
        #expect(clock.now - stopped < .seconds(60))
        #expect(ProcessGroup.isGone(pgid))
        #expect(await eventually { isGroupGone(pgid) })
    }

    @Test("the exit code comes through bwrap; a missing program fails like the process runner's")
    func exitCodes() async throws {
        let harness = try SandboxHarness()
        #expect(try await harness.run("exit 3") == .exited(3))
        guard case .works(let bwrap) = bubblewrap else { return }
        let runner = SandboxRunner(
            configuration: SandboxRunner.Configuration(bwrap: bwrap, hidden: []),
            process: JobRunner(logger: quietLogger)
        )
        let job = JobRunner.Job(
            command: ["no-such-program-comity"],
            environment: ["PATH": "/usr/bin:/bin"],
            workDirectory: harness.root,
            maxRuntimeSeconds: nil
        )
        let outcome = await runner.run(job, control: JobControl(), onStart: { _ in }, sink: { _ in })
        #expect(outcome == .failed("cannot start no-such-program-comity: command not found"))
    }

    @Test("the probe finds bwrap working; the inventory lists the sandbox runner")
    func probe() {
        let runtime = RuntimeProbe.detect(runner: .sandbox)
        #expect(runtime.available.contains(.sandbox))
        #expect(!runtime.notes.contains { $0.hasPrefix("sandbox") })
    }
}

@Suite("Sandbox configuration")
struct SandboxConfigurationTests {
    @Test("an agent configured with --runner sandbox refuses to start where bwrap does not work")
    func failsClosed() throws {
        var runtime = HostRuntime(runner: .sandbox, available: [.process])
        RuntimeProbe.addSandbox(.unavailable("sandbox: /usr/bin/bwrap cannot create namespaces: Operation not permitted"), to: &runtime)
        #expect(runtime.notes == ["sandbox: /usr/bin/bwrap cannot create namespaces: Operation not permitted"])
        let configuration = AgentConfiguration(server: nil, joinToken: nil, stateDirectory: "/nonexistent", runner: .sandbox)
        let agent = AgentService(configuration: configuration, logger: quietLogger)
        let error = #expect(throws: AgentError.self) { try agent.checkSandbox(runtime) }
        #expect(error?.code == .configuration)
        #expect(error?.message.contains("Operation not permitted") == true)
        // A process host with the same probe starts (and takes no jobs with non-public data).
        let process = AgentService(
            configuration: AgentConfiguration(server: nil, joinToken: nil, stateDirectory: "/nonexistent", runner: .process),
            logger: quietLogger
        )
        try process.checkSandbox(runtime)
    }

    @Test("program names resolve against the job's PATH; relative paths against the work folder")
    func resolve() {
        #expect(SandboxRunner.resolve("sh", path: "/nonexistent:/bin:/usr/bin", workDirectory: "/w") == "/bin/sh")
        #expect(SandboxRunner.resolve("bin/train", path: nil, workDirectory: "/w") == "/w/bin/train")
        #expect(SandboxRunner.resolve("/opt/x", path: nil, workDirectory: "/w") == "/opt/x")
        #expect(SandboxRunner.resolve("no-such-program-comity", path: "/bin:/usr/bin", workDirectory: "/w") == nil)
    }

    @Test("the network is cut unless the job asks for it; the state folder is covered; GPUs only for GPU jobs")
    func arguments() throws {
        let root = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let state = StateDirectory(path: root + "/state")
        try state.prepare()
        let work = try state.makeWorkDirectory(attempt: 9)
        let runner = SandboxRunner(
            configuration: SandboxRunner.Configuration(bwrap: "/usr/bin/bwrap", hidden: [state.path, root + "/missing"]),
            process: JobRunner(logger: quietLogger)
        )
        var job = JobRunner.Job(command: ["true"], environment: [:], workDirectory: work, maxRuntimeSeconds: nil, network: false)
        let arguments = runner.arguments(for: job)
        let canonicalState = SandboxRunner.canonical(state.path)
        let canonicalWork = SandboxRunner.canonical(work)
        #expect(arguments.contains("--unshare-net"))
        #expect(arguments.contains("--unshare-pid"))
        #expect(!arguments.contains("--die-with-parent"))
        #expect(!arguments.contains("--dev-bind"))
        let hide = try #require(arguments.firstIndex(of: canonicalState))
        let bind = try #require(arguments.firstIndex(of: "--bind"))
        #expect(arguments[hide - 1] == "--tmpfs" && hide < bind)
        #expect(Array(arguments[bind...].prefix(3)) == ["--bind", canonicalWork, canonicalWork])
        #expect(!arguments.contains(root + "/missing"))
        job.network = true
        #expect(!runner.arguments(for: job).contains("--unshare-net"))
    }
}
