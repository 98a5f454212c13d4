import ComityAPI
import ComityAgent
import ComityCore
import Foundation
import Logging
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// This machine's cgroup hierarchy, when one can limit jobs (detected once, as the agent does).
private let hostCGroups = CGroupHierarchy.host.hierarchy

/// Why the tests that need real cgroups are skipped here.
private let noCGroups: Comment = {
    if case .unusable(let reason) = CGroupHierarchy.host {
        return Comment(rawValue: "no usable cgroups on this machine: \(reason)")
    }
    return "cgroups are usable"
}()

/// A Python 3 interpreter for the memory-hungry jobs (not a pyenv shim: a script in front of it costs memory too).
private let python: String? = ["/usr/bin/python3", "/usr/local/bin/python3"].first {
    FileManager.default.isExecutableFile(atPath: $0)
}

@Suite("cgroups: finding the hierarchy in /proc")
struct CGroupDetectionTests {
    /// This kind of machine: a hybrid layout whose cgroup2 mount has no memory controller.
    static let hybridMountInfo = """
        31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
        32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
        35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
        39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
        40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
        41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
        50 23 0:40 / /proc rw - proc proc rw
        """
    static let hybridCGroup = """
        9:name=systemd:/
        8:pids:/
        4:memory:/process_api/85edcb
        1:cpu,cpuacct:/
        0::/
        """

    @Test("v1 folders come from each controller's mount and this process's path in it")
    func hybrid() throws {
        let mounts = CGroupHierarchy.parseMountInfo(Self.hybridMountInfo)
        #expect(mounts.count == 5, "the tmpfs and proc mounts are not cgroups")
        let memberships = CGroupHierarchy.parseMemberships(Self.hybridCGroup)
        let v1 = try CGroupHierarchy.v1Directories(mounts: mounts, memberships: memberships).get()
        #expect(v1[.memory] == "/sys/fs/cgroup/memory/process_api/85edcb")
        #expect(v1[.cpu] == "/sys/fs/cgroup/cpu,cpuacct")
        #expect(v1[.pids] == "/sys/fs/cgroup/pids")
        let v2 = try CGroupHierarchy.v2Directory(mounts: mounts, memberships: memberships).get()
        #expect(v2 == "/sys/fs/cgroup/unified")
    }

    @Test("v2: the agent's own cgroup, or the parent of the leaf it moved itself into")
    func unified() throws {
        let mounts = CGroupHierarchy.parseMountInfo(
            "30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate"
        )
        for (path, expected) in [
            ("/system.slice/comity-agent.service", "/sys/fs/cgroup/system.slice/comity-agent.service"),
            ("/system.slice/comity-agent.service/comity.agent", "/sys/fs/cgroup/system.slice/comity-agent.service"),
            ("/", "/sys/fs/cgroup"),
        ] {
            let memberships = CGroupHierarchy.parseMemberships("0::\(path)\n")
            let directory = try CGroupHierarchy.v2Directory(mounts: mounts, memberships: memberships).get()
            #expect(directory == expected)
        }
        let noMemory = CGroupHierarchy.v1Directories(
            mounts: mounts,
            memberships: CGroupHierarchy.parseMemberships("0::/x\n")
        )
        #expect(throws: CGroupError("no memory controller mounted")) { try noMemory.get() }
    }

    @Test("a bind-mounted sub-tree maps paths below its root, and nothing else")
    func boundRoot() {
        let mount = CGroupHierarchy.Mount(
            root: "/docker/abc",
            point: "/sys/fs/cgroup/memory",
            type: "cgroup",
            options: ["rw", "memory"]
        )
        #expect(CGroupHierarchy.directory(of: "/docker/abc", in: mount) == "/sys/fs/cgroup/memory")
        #expect(CGroupHierarchy.directory(of: "/docker/abc/job", in: mount) == "/sys/fs/cgroup/memory/job")
        #expect(CGroupHierarchy.directory(of: "/docker/abcdef", in: mount) == nil)
        let spaced = CGroupHierarchy.parseMountInfo(
            #"41 31 0:38 / /mnt/my\040cgroups rw - cgroup2 cgroup2 rw"#
        )
        #expect(spaced.first?.point == "/mnt/my cgroups")
    }

    @Test("the inventory says which version limits jobs, or that jobs run without limits and why")
    func inventoryNote() {
        var runtime = HostRuntime(runner: .process, available: [.process])
        RuntimeProbe.addCGroups(.unusable(reason: "v2: no cgroup2 file system mounted"), to: &runtime)
        #expect(runtime.cgroups == nil)
        #expect(runtime.notes == ["cgroups: none usable (v2: no cgroup2 file system mounted); jobs run without limits"])

        var limited = HostRuntime(runner: .process, available: [.process])
        let hierarchy = CGroupHierarchy(version: .v1, parents: [.memory: "/m", .cpu: "/c"])
        RuntimeProbe.addCGroups(.usable(hierarchy), to: &limited)
        #expect(limited.cgroups == "v1")
        #expect(limited.notes == ["cgroups: v1 without pids; those limits are not enforced"])
    }
}

/// Runs jobs in real cgroups and keeps what they printed.
private final class LimitedRun: Sendable {
    let chunks = Mutex<[LogAppend]>([])
    let workDirectory: String
    let attempt = Int64.random(in: 1_000_000_000...9_999_999_999)

    init() throws { workDirectory = try makeTemporaryDirectory() }

    deinit { try? FileManager.default.removeItem(atPath: workDirectory) }

    func run(
        _ command: [String],
        memory: Int64 = 256 << 20,
        cpuMillis: Int = 1000,
        pidsLimit: Int = 4096,
        hierarchy: CGroupHierarchy
    ) async -> JobRunner.Outcome {
        var configuration = JobRunner.Configuration(killGrace: .seconds(2), cgroups: hierarchy)
        configuration.pidsLimit = pidsLimit
        let runner = JobRunner(configuration: configuration, logger: quietLogger)
        let job = JobRunner.Job(
            command: command,
            environment: ["PATH": "/usr/local/bin:/usr/bin:/bin"],
            workDirectory: workDirectory,
            maxRuntimeSeconds: 60,
            resources: ResourceRequest(cpuMillis: cpuMillis, memoryBytes: memory),
            attempt: attempt
        )
        return await runner.run(job, control: JobControl(), sink: { chunk in self.chunks.withLock { $0.append(chunk) } })
    }

    func output(_ stream: LogStream) -> String {
        chunks.withLock { $0.filter { $0.stream == stream }.map(\.data).joined() }
    }

    /// Folders of this attempt's cgroup (`comity-<attempt>` or a suffixed name) still present.
    func leftovers(in hierarchy: CGroupHierarchy) -> [String] {
        Set(hierarchy.parents.values).flatMap { parent in
            ((try? FileManager.default.contentsOfDirectory(atPath: parent)) ?? [])
                .filter { $0 == "comity-\(attempt)" || $0.hasPrefix("comity-\(attempt).") }
                .map { parent + "/" + $0 }
        }
    }
}

/// Whether `pid` is gone or only a zombie (another parent's to reap).
private func isDead(_ pid: Int32) -> Bool {
    guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
        let entry = ProcessTable.parseStat(text)
    else { return true }
    return entry.isZombie
}

@Suite(
    "cgroups: jobs run with real limits",
    .enabled(if: hostCGroups != nil, noCGroups)
)
struct CGroupLimitTests {
    @Test("a job allocating 256 MiB under a 64 MiB limit ends OOM_KILLED, and its cgroup is removed")
    func outOfMemory() async throws {
        let hierarchy = try #require(hostCGroups)
        let python = try #require(python, "needs /usr/bin/python3")
        let run = try LimitedRun()
        let outcome = await run.run(
            [python, "-c", "b = b'x' * (256 << 20); print('survived', len(b))"],
            memory: 64 << 20,
            hierarchy: hierarchy
        )
        #expect(outcome == .oomKilled("memory limit 64Mi exceeded"), "stderr: \(run.output(.stderr))")
        #expect(!run.output(.stdout).contains("survived"))
        let request = outcome.finishRequest
        #expect(request.outcome == .oomKilled && request.message == "memory limit 64Mi exceeded")
        #expect(run.leftovers(in: hierarchy) == [])
    }

    @Test("a job within its limit exits 0, inside its own cgroup, which is removed afterwards")
    func withinLimit() async throws {
        let hierarchy = try #require(hostCGroups)
        let python = try #require(python, "needs /usr/bin/python3")
        let run = try LimitedRun()
        let outcome = await run.run(
            [python, "-c", "b = b'x' * (16 << 20); print(len(b)); print(open('/proc/self/cgroup').read())"],
            memory: 128 << 20,
            hierarchy: hierarchy
        )
        #expect(outcome == .exited(0), "stderr: \(run.output(.stderr))")
        let lines = run.output(.stdout).split(separator: "\n")
        #expect(lines.first == "16777216")
        let memoryLine = lines.first { line in
            let fields = line.split(separator: ":", omittingEmptySubsequences: false)
            let controllers = fields.count == 3 ? fields[1].split(separator: ",") : []
            return hierarchy.version == .v2 ? fields.first == "0" : controllers.contains("memory")
        }
        #expect(memoryLine?.hasSuffix("/comity-\(run.attempt)") == true, "\(lines)")
        #expect(run.leftovers(in: hierarchy) == [])
    }

    @Test("the limit files hold what the job asked for: memory, CPU quota from cpus, pids")
    func limitFiles() throws {
        let hierarchy = try #require(hostCGroups)
        let name = "comity-test-\(getpid())-\(Int.random(in: 0..<1_000_000))"
        let cgroup = try hierarchy.create(
            name: name,
            limits: CGroupLimits(memoryBytes: 96 << 20, cpuMillis: 1500, pids: 77)
        )
        defer { for folder in cgroup.folders { rmdir(folder) } }
        func read(_ controller: CGroupHierarchy.Controller, _ file: String) throws -> String {
            let folder = try #require(cgroup.directories[controller])
            return try String(contentsOfFile: folder + "/" + file, encoding: .utf8)
                .trimmingCharacters(in: .whitespacesAndNewlines)
        }
        switch hierarchy.version {
        case .v2:
            #expect(try read(.memory, "memory.max") == String(96 << 20))
            if cgroup.directories[.cpu] != nil { #expect(try read(.cpu, "cpu.max") == "150000 100000") }
        case .v1:
            #expect(try read(.memory, "memory.limit_in_bytes") == String(96 << 20))
            if cgroup.directories[.cpu] != nil {
                #expect(try read(.cpu, "cpu.cfs_period_us") == "100000")
                #expect(try read(.cpu, "cpu.cfs_quota_us") == "150000")
            }
        }
        if cgroup.directories[.pids] != nil { #expect(try read(.pids, "pids.max") == "77") }
        #expect(cgroup.processes() == [])
        #expect(cgroup.oomKills() == 0)
    }

    @Test("the pids limit stops a job that forks 200 children at 50 processes")
    func pidsLimit() async throws {
        let hierarchy = try #require(hostCGroups)
        try #require(hierarchy.parents[.pids] != nil, "this hierarchy has no pids controller")
        let python = try #require(python, "needs /usr/bin/python3")
        let run = try LimitedRun()
        let script = """
            import os, time
            started = 0
            for _ in range(200):
                try:
                    pid = os.fork()
                except OSError:
                    continue
                if pid == 0:
                    time.sleep(60)
                    os._exit(0)
                started += 1
            print(started, flush=True)
            """
        let clock = ContinuousClock()
        let began = clock.now
        let outcome = await run.run([python, "-c", script], pidsLimit: 50, hierarchy: hierarchy)
        #expect(outcome == .exited(0), "stderr: \(run.output(.stderr))")
        let started = try #require(Int(run.output(.stdout).trimmingCharacters(in: .whitespacesAndNewlines)))
        #expect(started < 50, "the job itself is one of the 50")
        #expect(started >= 40)
        #expect(clock.now - began < .seconds(30), "the children were killed, not waited for")
        #expect(run.leftovers(in: hierarchy) == [])
    }

    @Test("a process that left the job's process group with setsid is killed when the job ends")
    func escapedProcess() async throws {
        let hierarchy = try #require(hostCGroups)
        let python = try #require(python, "needs /usr/bin/python3")
        let run = try LimitedRun()
        let script = """
            import os, time
            pid = os.fork()
            if pid == 0:
                os.setsid()
                time.sleep(300)
                os._exit(0)
            while os.getsid(pid) != pid:
                time.sleep(0.01)
            print(pid, flush=True)
            """
        let outcome = await run.run([python, "-c", script], hierarchy: hierarchy)
        #expect(outcome == .exited(0), "stderr: \(run.output(.stderr))")
        let escaped = try #require(Int32(run.output(.stdout).trimmingCharacters(in: .whitespacesAndNewlines)))
        // Its own session and group: the process-group kill does not reach it, the cgroup kill does.
        #expect(isDead(escaped), "process \(escaped) outlived its job")
        if !isDead(escaped) { kill(escaped, SIGKILL) }
        #expect(run.leftovers(in: hierarchy) == [])
    }

    @Test("an empty attempt cgroup older than the age is removed as stale; a young one and a busy one are kept")
    func staleCGroups() async throws {
        let hierarchy = try #require(hostCGroups)
        let python = try #require(python, "needs /usr/bin/python3")
        let prefix = "comity-test-stale-\(getpid())-\(Int.random(in: 0..<1_000_000))"
        let empty = try hierarchy.create(name: prefix + "-empty", limits: CGroupLimits())
        let busy = try hierarchy.create(name: prefix + "-busy", limits: CGroupLimits())
        defer { for folder in empty.folders + busy.folders { rmdir(folder) } }
        // A process in the busy one (the join script the runner uses, then a sleep).
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments =
            ["-c", JobRunner.joinScript, "comity-job", String(busy.procsFiles.count)] + busy.procsFiles
            + [python, "-c", "import time; time.sleep(30)"]
        try process.run()
        let sleeper = process.processIdentifier
        defer {
            kill(sleeper, SIGKILL)
            process.waitUntilExit()
        }
        // The join script enters the folders one after another: wait until it is in every one.
        func joinedAll() -> Bool {
            busy.procsFiles.allSatisfy {
                ((try? String(contentsOfFile: $0, encoding: .utf8)) ?? "").split(separator: "\n").contains("\(sleeper)")
            }
        }
        let deadline = ContinuousClock.now.advanced(by: .seconds(20))
        while !joinedAll(), ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
        #expect(joinedAll())
        #expect(busy.processes() == [sleeper])

        #expect(hierarchy.removeStale(prefix: prefix) == [], "both are young")
        let later = Date().addingTimeInterval(3600)
        let removed = hierarchy.removeStale(prefix: prefix, now: later)
        #expect(removed == empty.folders.sorted())
        #expect(empty.folders.allSatisfy { !FileManager.default.fileExists(atPath: $0) })
        #expect(busy.folders.allSatisfy { FileManager.default.fileExists(atPath: $0) })
    }

    @Test("a missing command fails as it does without limits, and leaves no cgroup")
    func missingCommand() async throws {
        let hierarchy = try #require(hostCGroups)
        let run = try LimitedRun()
        let outcome = await run.run(["no-such-command-comity"], hierarchy: hierarchy)
        #expect(outcome == .failed("cannot start no-such-command-comity: command not found"))
        #expect(run.leftovers(in: hierarchy) == [])
    }
}
