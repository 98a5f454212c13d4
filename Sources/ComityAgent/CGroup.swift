import ComityCore
import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A cgroup hierarchy in which the agent creates one cgroup per attempt to enforce the job's limits.
///
/// Found once per process by ``detect()`` (``host``): cgroup v2 first, then v1, else none with a reason.
///
/// - **v2**: the agent's own cgroup must offer the `memory` controller (and `cpu`, `pids` when present) and let the
///   agent enable them for its children. v2 forbids processes in a cgroup whose children get controllers (the
///   "no internal processes" rule), so when enabling fails with `EBUSY` the agent moves itself into a leaf child
///   `comity.agent` of its own cgroup and tries again; attempt cgroups `comity-<attempt>` are that leaf's siblings.
///   This is what systemd expects of a service with `Delegate=yes`: the service's cgroup is the agent's to divide.
///   When other processes share the agent's cgroup (an agent started from a login shell), v2 is not usable and the
///   agent moves itself back.
/// - **v1**: one folder per controller, found from `/proc/self/cgroup` and `/proc/self/mountinfo`; attempt cgroups
///   are children of the agent's own cgroup in each of the `memory`, `cpu` and `pids` hierarchies (v1 has no rule
///   against internal processes).
package struct CGroupHierarchy: Sendable, Hashable {
    package enum Version: String, Sendable, Hashable {
        case v1, v2
    }

    /// The controllers the agent uses; `memory` is required, the others are used when present.
    package enum Controller: String, Sendable, Hashable, CaseIterable, Comparable {
        case memory, cpu, pids

        package static func < (lhs: Self, rhs: Self) -> Bool {
            allCases.firstIndex(of: lhs)! < allCases.firstIndex(of: rhs)!
        }
    }

    /// What ``detect()`` found.
    package enum Detection: Sendable, Hashable {
        case usable(CGroupHierarchy)
        /// No hierarchy can limit jobs here: why, in one line.
        case unusable(reason: String)

        package var hierarchy: CGroupHierarchy? {
            if case .usable(let hierarchy) = self { return hierarchy }
            return nil
        }
    }

    /// The name of the leaf cgroup a v2 agent moves itself into.
    package static let agentLeaf = "comity.agent"
    /// CPU quota period, in microseconds (the kernel's default).
    package static let cpuPeriodMicros = 100_000

    package var version: Version
    /// The folder attempt cgroups are created in, per controller (with v2, one folder for all).
    package var parents: [Controller: String]

    package init(version: Version, parents: [Controller: String]) {
        self.version = version
        self.parents = parents
    }

    /// The controllers this hierarchy limits jobs with, in a fixed order.
    package var controllers: [Controller] { parents.keys.sorted() }

    /// For people: `v1 (memory, cpu, pids)`.
    package var summary: String {
        "\(version.rawValue) (\(controllers.map(\.rawValue).joined(separator: ", ")))"
    }

    /// This process's hierarchy, detected on first use (v2 detection may move the process into a leaf cgroup, which
    /// must happen once); stale attempt cgroups of an agent that died are removed then (``removeStale(olderThan:)``).
    package static let host: Detection = {
        let detection = detect()
        _ = detection.hierarchy?.removeStale()
        return detection
    }()

    /// Removes attempt cgroups (`comity-…`) that are empty and older than `age`: left by an agent that died before
    /// it could clean up. A live attempt's cgroup is empty only for the moment between its creation and its job
    /// joining it, and between the job's end and its removal, so the age keeps agents sharing a parent (tests) apart.
    ///
    /// - Parameters:
    ///   - age: how old an empty cgroup must be to count as stale.
    ///   - prefix: only folders whose name starts with it.
    ///   - now: the current time.
    /// - Returns: the folders removed.
    @discardableResult
    package func removeStale(
        olderThan age: Duration = .seconds(60),
        prefix: String = "comity-",
        now: Date = Date()
    ) -> [String] {
        let manager = FileManager.default
        let cutoff = now.addingTimeInterval(-Double(age.components.seconds))
        var removed: [String] = []
        for parent in Set(parents.values) {
            for entry in (try? manager.contentsOfDirectory(atPath: parent)) ?? [] where entry.hasPrefix(prefix) {
                let folder = parent + "/" + entry
                guard let created = (try? manager.attributesOfItem(atPath: folder))?[.modificationDate] as? Date,
                    created < cutoff,
                    let procs = CGroupFile.text(folder + "/cgroup.procs"),
                    procs.allSatisfy(\.isWhitespace),
                    rmdir(folder) == 0
                else { continue }
                removed.append(folder)
            }
        }
        return removed.sorted()
    }
}

// MARK: - Detection

extension CGroupHierarchy {
    /// One line of `/proc/self/mountinfo` for a cgroup file system.
    package struct Mount: Sendable, Hashable {
        /// The path inside the hierarchy that is mounted (`/` unless a sub-tree is bind-mounted).
        package var root: String
        package var point: String
        /// `cgroup2` or `cgroup`.
        package var type: String
        /// The super options (for v1, the controllers bound to the hierarchy).
        package var options: [String]

        package init(root: String, point: String, type: String, options: [String]) {
            self.root = root
            self.point = point
            self.type = type
            self.options = options
        }
    }

    /// One line of `/proc/self/cgroup`: `id:controllers:path` (id 0 with no controllers is v2's line).
    package struct Membership: Sendable, Hashable {
        package var id: Int
        package var controllers: [String]
        package var path: String
    }

    /// Detects the hierarchy of the running process (reads `/proc/self/*`, creates and removes a probe cgroup, and
    /// for v2 may move this process into ``agentLeaf``).
    package static func detect() -> Detection {
        if let parent = ProcessInfo.processInfo.environment[parentVariable], !parent.isEmpty {
            return detect(parent: parent)
        }
        guard let mountText = try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8),
            let cgroupText = try? String(contentsOfFile: "/proc/self/cgroup", encoding: .utf8)
        else {
            return .unusable(reason: "no /proc/self/cgroup (not Linux?)")
        }
        let mounts = parseMountInfo(mountText)
        let memberships = parseMemberships(cgroupText)
        var reasons: [String] = []
        switch v2Directory(mounts: mounts, memberships: memberships) {
        case .success(let directory):
            switch prepareV2(directory) {
            case .success(let hierarchy): return .usable(hierarchy)
            case .failure(let failure): reasons.append("v2: \(failure.message)")
            }
        case .failure(let failure): reasons.append("v2: \(failure.message)")
        }
        switch v1Directories(mounts: mounts, memberships: memberships) {
        case .success(let directories):
            switch prepareV1(directories) {
            case .success(let hierarchy): return .usable(hierarchy)
            case .failure(let failure): reasons.append("v1: \(failure.message)")
            }
        case .failure(let failure): reasons.append("v1: \(failure.message)")
        }
        return .unusable(reason: reasons.joined(separator: "; "))
    }

    /// The environment variable (set by `--cgroup-parent`) naming a cgroup v2 folder delegated to the agent's jobs.
    package static let parentVariable = "COMITY_CGROUP_PARENT"

    /// Uses `parent`, a cgroup v2 folder given to the agent's jobs (like Slurm's and the kubelet's cgroup parent),
    /// instead of the agent's own cgroup: for hosts where the agent shares its cgroup with other processes. The
    /// folder is created when missing (its parent must offer the memory controller, which the agent enables there
    /// when it may); attempt cgroups are its children. No fallback: a bad parent is reported, never ignored.
    package static func detect(parent: String) -> Detection {
        guard parent.hasPrefix("/"), !parent.split(separator: "/").contains("..") else {
            return .unusable(reason: "--cgroup-parent: expected an absolute path in a cgroup2 file system, got \(parent)")
        }
        let above = String(parent[..<(parent.lastIndex(of: "/") ?? parent.startIndex)])
        guard CGroupFile.text((above.isEmpty ? "" : above) + "/cgroup.controllers") != nil else {
            return .unusable(reason: "--cgroup-parent \(parent): \(above.isEmpty ? "/" : above) is not a cgroup v2 folder")
        }
        if !FileManager.default.fileExists(atPath: parent) {
            if !words(CGroupFile.text(above + "/cgroup.subtree_control")).contains(Controller.memory.rawValue) {
                CGroupFile.put(above + "/cgroup.subtree_control", "+memory")
            }
            for controller in [Controller.cpu, .pids] {
                CGroupFile.put(above + "/cgroup.subtree_control", "+" + controller.rawValue)
            }
            if mkdir(parent, 0o755) != 0, errno != EEXIST {
                return .unusable(reason: "--cgroup-parent: cannot create \(parent): \(describe(errno))")
            }
        }
        switch prepareV2(parent) {
        case .success(let hierarchy): return .usable(hierarchy)
        case .failure(let failure): return .unusable(reason: "--cgroup-parent \(parent): \(failure.message)")
        }
    }

    /// Parses `/proc/self/mountinfo`, keeping cgroup and cgroup2 mounts.
    package static func parseMountInfo(_ text: String) -> [Mount] {
        var mounts: [Mount] = []
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
            // id parent major:minor root point options [optional…] - type source super-options
            guard let dash = fields.firstIndex(of: "-"), dash >= 5, fields.count > dash + 3 else { continue }
            let type = fields[dash + 1]
            guard type == "cgroup" || type == "cgroup2" else { continue }
            mounts.append(
                Mount(
                    root: unescape(fields[3]),
                    point: unescape(fields[4]),
                    type: type,
                    options: fields[dash + 3].split(separator: ",").map(String.init)
                )
            )
        }
        return mounts
    }

    /// Parses `/proc/self/cgroup`.
    package static func parseMemberships(_ text: String) -> [Membership] {
        text.split(separator: "\n").compactMap { line in
            let parts = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            guard parts.count == 3, let id = Int(parts[0]) else { return nil }
            return Membership(
                id: id,
                controllers: parts[1].split(separator: ",").map(String.init),
                path: String(parts[2])
            )
        }
    }

    /// The folder of `path` (a cgroup path as `/proc/self/cgroup` shows it) under `mount`, or `nil` when the mount
    /// shows another part of the hierarchy.
    package static func directory(of path: String, in mount: Mount) -> String? {
        let relative: Substring
        if mount.root == "/" {
            relative = Substring(path)
        } else if path == mount.root {
            relative = ""
        } else if path.hasPrefix(mount.root + "/") {
            relative = path.dropFirst(mount.root.count)
        } else {
            return nil
        }
        let trimmed = relative == "/" ? "" : relative
        return mount.point + trimmed
    }

    /// Where this process sits in the v2 hierarchy (a ``agentLeaf`` is skipped: the agent put itself there).
    package static func v2Directory(mounts: [Mount], memberships: [Membership]) -> Result<String, CGroupError> {
        guard let line = memberships.first(where: { $0.id == 0 && $0.controllers.isEmpty }) else {
            return .failure(CGroupError("this process is in no cgroup v2 hierarchy"))
        }
        let candidates = mounts.filter { $0.type == "cgroup2" }
        guard !candidates.isEmpty else { return .failure(CGroupError("no cgroup2 file system mounted")) }
        // Prefer the usual mount points, then any other.
        let ordered =
            candidates.filter { $0.point == "/sys/fs/cgroup" }
            + candidates.filter { $0.point == "/sys/fs/cgroup/unified" }
            + candidates.filter { $0.point != "/sys/fs/cgroup" && $0.point != "/sys/fs/cgroup/unified" }
        for mount in ordered {
            guard var directory = directory(of: line.path, in: mount) else { continue }
            if directory.hasSuffix("/" + agentLeaf) { directory = String(directory.dropLast(agentLeaf.count + 1)) }
            return .success(directory)
        }
        return .failure(CGroupError("cgroup v2 path \(line.path) is outside every cgroup2 mount"))
    }

    /// Where this process sits in each v1 hierarchy the agent uses; fails without a `memory` hierarchy.
    package static func v1Directories(
        mounts: [Mount],
        memberships: [Membership]
    ) -> Result<[Controller: String], CGroupError> {
        var directories: [Controller: String] = [:]
        for controller in Controller.allCases {
            guard let line = memberships.first(where: { $0.id != 0 && $0.controllers.contains(controller.rawValue) }),
                let directory = mounts.lazy.filter({ $0.type == "cgroup" && $0.options.contains(controller.rawValue) })
                    .compactMap({ Self.directory(of: line.path, in: $0) }).first
            else { continue }
            directories[controller] = directory
        }
        guard directories[.memory] != nil else {
            return .failure(CGroupError("no memory controller mounted"))
        }
        return .success(directories)
    }

    /// Checks a v2 cgroup and enables the controllers for its children (moving this process into a leaf if needed).
    static func prepareV2(_ directory: String) -> Result<CGroupHierarchy, CGroupError> {
        let offered = words(CGroupFile.text(directory + "/cgroup.controllers"))
        guard offered.contains(Controller.memory.rawValue) else {
            let list = offered.isEmpty ? "none" : offered.joined(separator: ", ")
            return .failure(CGroupError("\(directory) offers no memory controller (offers: \(list))"))
        }
        let wanted = Controller.allCases.filter { offered.contains($0.rawValue) }
        var enabled = Set(words(CGroupFile.text(directory + "/cgroup.subtree_control")))
        if !enabled.contains(Controller.memory.rawValue) {
            var code = CGroupFile.put(directory + "/cgroup.subtree_control", "+memory")
            if code == EBUSY {
                // Processes live in this cgroup: move this one into a leaf, then try again.
                let leaf = directory + "/" + agentLeaf
                if mkdir(leaf, 0o755) != 0, errno != EEXIST {
                    return .failure(CGroupError("cannot create \(leaf): \(describe(errno))"))
                }
                let moved = CGroupFile.put(leaf + "/cgroup.procs", String(getpid()))
                guard moved == 0 else {
                    rmdir(leaf)
                    return .failure(CGroupError("cannot move the agent into \(leaf): \(describe(moved))"))
                }
                code = CGroupFile.put(directory + "/cgroup.subtree_control", "+memory")
                if code == EBUSY {
                    CGroupFile.put(directory + "/cgroup.procs", String(getpid()))
                    rmdir(leaf)
                    return .failure(
                        CGroupError(
                            "\(directory) also holds other processes, so the agent cannot enable controllers for jobs "
                                + "(run the agent as its own systemd service with Delegate=yes)"
                        )
                    )
                }
            }
            guard code == 0 else {
                return .failure(
                    CGroupError(
                        "cannot enable the memory controller in \(directory)/cgroup.subtree_control: "
                            + "\(describe(code)) (the agent needs a delegated cgroup, e.g. Delegate=yes)"
                    )
                )
            }
            enabled.insert(Controller.memory.rawValue)
        }
        var parents: [Controller: String] = [.memory: directory]
        for controller in wanted where controller != .memory {
            if !enabled.contains(controller.rawValue),
                CGroupFile.put(directory + "/cgroup.subtree_control", "+" + controller.rawValue) != 0
            {
                continue
            }
            parents[controller] = directory
        }
        if let failure = probe(directory, expecting: "memory.max") { return .failure(failure) }
        return .success(CGroupHierarchy(version: .v2, parents: parents))
    }

    /// Checks that attempt cgroups can be created in each v1 folder; drops optional controllers that cannot.
    static func prepareV1(_ directories: [Controller: String]) -> Result<CGroupHierarchy, CGroupError> {
        var parents: [Controller: String] = [:]
        for (controller, directory) in directories {
            let expected: String =
                switch controller {
                case .memory: "memory.limit_in_bytes"
                case .cpu: "cpu.cfs_quota_us"
                case .pids: "pids.max"
                }
            if let failure = probe(directory, expecting: expected) {
                if controller == .memory { return .failure(failure) }
                continue
            }
            parents[controller] = directory
        }
        return .success(CGroupHierarchy(version: .v1, parents: parents))
    }

    /// Creates and removes a child of `directory`; the failure when that is not possible or `file` is missing.
    static func probe(_ directory: String, expecting file: String) -> CGroupError? {
        let child = directory + "/comity-probe-\(getpid())"
        if mkdir(child, 0o755) != 0, errno != EEXIST {
            return CGroupError("cannot create a cgroup in \(directory): \(describe(errno))")
        }
        defer { rmdir(child) }
        guard FileManager.default.fileExists(atPath: child + "/" + file) else {
            return CGroupError("a cgroup created in \(directory) has no \(file)")
        }
        return nil
    }

    /// Undoes mountinfo's octal escapes (`\040` for a space).
    private static func unescape(_ field: String) -> String {
        guard field.contains("\\") else { return field }
        var bytes: [UInt8] = []
        var utf8 = Array(field.utf8)[...]
        while let byte = utf8.first {
            if byte == UInt8(ascii: "\\"), utf8.count >= 4,
                let value = UInt8(String(decoding: utf8.dropFirst().prefix(3), as: UTF8.self), radix: 8)
            {
                bytes.append(value)
                utf8 = utf8.dropFirst(4)
            } else {
                bytes.append(byte)
                utf8 = utf8.dropFirst()
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    private static func words(_ text: String?) -> [String] {
        (text ?? "").split(whereSeparator: \.isWhitespace).map(String.init)
    }
}

// MARK: - Attempt cgroups

/// The limits of one attempt's cgroup; `nil` leaves a limit unset.
package struct CGroupLimits: Sendable, Hashable {
    package var memoryBytes: Int64?
    package var cpuMillis: Int?
    package var pids: Int?

    package init(memoryBytes: Int64? = nil, cpuMillis: Int? = nil, pids: Int? = nil) {
        self.memoryBytes = memoryBytes
        self.cpuMillis = cpuMillis
        self.pids = pids
    }
}

/// Why a cgroup could not be found, created or limited, in words for the inventory or the job's failure.
package struct CGroupError: Error, Sendable, Hashable, CustomStringConvertible {
    package var message: String

    package init(_ message: String) { self.message = message }

    package var description: String { message }
}

extension CGroupHierarchy {
    /// Creates the cgroup of one attempt with its limits (in every controller's hierarchy for v1).
    ///
    /// `name` is used as is when free in every parent folder, else with a suffix (`comity-7.2`): agents of separate
    /// pools on one machine may run attempts with the same number.
    ///
    /// - Throws: ``CGroupError`` when a folder cannot be created or a limit cannot be written; nothing is left behind.
    package func create(name: String, limits: CGroupLimits) throws(CGroupError) -> CGroup {
        let folders = Array(Set(parents.values)).sorted()
        var chosen = name
        var suffix = 1
        while folders.contains(where: { FileManager.default.fileExists(atPath: $0 + "/" + chosen) }) {
            suffix += 1
            chosen = "\(name).\(suffix)"
        }
        var created: [String] = []
        for folder in folders {
            let path = folder + "/" + chosen
            guard mkdir(path, 0o755) == 0 else {
                let code = errno
                for path in created { rmdir(path) }
                throw CGroupError("cannot create cgroup \(path): \(Self.describe(code))")
            }
            created.append(path)
        }
        var directories: [Controller: String] = [:]
        for (controller, folder) in parents { directories[controller] = folder + "/" + chosen }
        let cgroup = CGroup(version: version, name: chosen, directories: directories, limits: limits)
        do {
            try cgroup.applyLimits()
        } catch {
            for path in created { rmdir(path) }
            throw error
        }
        return cgroup
    }

    static func describe(_ code: Int32) -> String { String(cString: strerror(code)) }
}

/// The cgroup of one attempt: its folders, the limits written into them, and the clean-up after the job.
package struct CGroup: Sendable, Hashable {
    package var version: CGroupHierarchy.Version
    /// The folder's name (the same in every hierarchy).
    package var name: String
    package var directories: [CGroupHierarchy.Controller: String]
    package var limits: CGroupLimits

    /// Every folder of this cgroup, once each.
    package var folders: [String] { Array(Set(directories.values)).sorted() }

    /// The `cgroup.procs` files a process must be written into to join this cgroup.
    package var procsFiles: [String] { folders.map { $0 + "/cgroup.procs" } }

    /// Writes the limits into the control files.
    func applyLimits() throws(CGroupError) {
        if let memory = directories[.memory], let bytes = limits.memoryBytes, bytes > 0 {
            switch version {
            case .v2:
                try set(memory, "memory.max", String(bytes))
                try setIfPresent(memory, "memory.swap.max", "0")
                // The OOM killer takes the whole job, not one of its processes.
                try setIfPresent(memory, "memory.oom.group", "1")
            case .v1:
                try set(memory, "memory.limit_in_bytes", String(bytes))
                try setIfPresent(memory, "memory.memsw.limit_in_bytes", String(bytes))
            }
        }
        if let cpu = directories[.cpu], let millis = limits.cpuMillis, millis > 0 {
            let period = CGroupHierarchy.cpuPeriodMicros
            // The kernel refuses quotas under 1 ms.
            let quota = max(1_000, millis * period / 1_000)
            switch version {
            case .v2:
                try set(cpu, "cpu.max", "\(quota) \(period)")
            case .v1:
                try set(cpu, "cpu.cfs_period_us", String(period))
                try set(cpu, "cpu.cfs_quota_us", String(quota))
            }
        }
        if let pids = directories[.pids], let count = limits.pids, count > 0 {
            try set(pids, "pids.max", String(count))
        }
    }

    private func set(_ folder: String, _ file: String, _ value: String) throws(CGroupError) {
        let code = CGroupFile.put(folder + "/" + file, value)
        guard code == 0 else {
            throw CGroupError("cannot write \(value) to \(folder)/\(file): \(CGroupHierarchy.describe(code))")
        }
    }

    private func setIfPresent(_ folder: String, _ file: String, _ value: String) throws(CGroupError) {
        guard FileManager.default.fileExists(atPath: folder + "/" + file) else { return }
        try set(folder, file, value)
    }

    /// The processes in this cgroup now (from every folder).
    package func processes() -> [Int32] {
        var pids = Set<Int32>()
        for file in procsFiles {
            for line in (CGroupFile.text(file) ?? "").split(separator: "\n") {
                if let pid = Int32(line) { pids.insert(pid) }
            }
        }
        return pids.sorted()
    }

    /// How many processes the kernel's OOM killer killed in this cgroup (0 when it cannot tell).
    package func oomKills() -> Int {
        guard let memory = directories[.memory] else { return 0 }
        let file = version == .v2 ? "memory.events" : "memory.oom_control"
        for line in (CGroupFile.text(memory + "/" + file) ?? "").split(separator: "\n") {
            let parts = line.split(separator: " ")
            if parts.count == 2, parts[0] == "oom_kill", let count = Int(parts[1]) { return count }
        }
        return 0
    }

    /// Kills every process left in the cgroup (also those that left the job's process group with `setsid`) and
    /// waits up to `timeout` for the cgroup to be empty.
    ///
    /// v2 uses `cgroup.kill` where the kernel has it; otherwise every listed process gets `SIGKILL`, repeatedly, so a
    /// process forked meanwhile is caught on the next round. Killed processes that are this process's children are
    /// reaped. Does not end early on task cancellation.
    ///
    /// - Returns: whether the cgroup is empty.
    @discardableResult
    package func killAll(timeout: Duration = .seconds(10)) async -> Bool {
        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: timeout)
        let me = getpid()
        var killFile: String?
        if version == .v2, let folder = folders.first, FileManager.default.fileExists(atPath: folder + "/cgroup.kill") {
            killFile = folder + "/cgroup.kill"
        }
        while true {
            let pids = processes()
            if pids.isEmpty { return true }
            if let killFile {
                CGroupFile.put(killFile, "1")
            } else {
                for pid in pids where pid > 1 && pid != me { kill(pid, SIGKILL) }
            }
            for pid in pids {
                guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                    let entry = ProcessTable.parseStat(text), entry.parent == me, entry.isZombie
                else { continue }
                var status: Int32 = 0
                _ = waitpid(pid, &status, WNOHANG)
            }
            if clock.now >= deadline { return processes().isEmpty }
            await ProcessGroup.pause(.milliseconds(20))
        }
    }

    /// Removes the cgroup's folders, retrying for up to `timeout` while the kernel still counts exiting processes.
    ///
    /// - Returns: the folders that could not be removed.
    @discardableResult
    package func remove(timeout: Duration = .seconds(5)) async -> [String] {
        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: timeout)
        var left = folders
        while true {
            left = left.filter { rmdir($0) != 0 && errno != ENOENT }
            if left.isEmpty || clock.now >= deadline { return left }
            await ProcessGroup.pause(.milliseconds(20))
        }
    }
}

/// Reads and writes cgroup control files with plain system calls, so errors keep their `errno`.
enum CGroupFile {
    static func text(_ path: String) -> String? {
        try? String(contentsOfFile: path, encoding: .utf8)
    }

    /// Writes `text` with one `write(2)`; returns 0 or the `errno`.
    @discardableResult
    static func put(_ path: String, _ text: String) -> Int32 {
        let descriptor = open(path, O_WRONLY | O_CLOEXEC)
        guard descriptor >= 0 else { return errno }
        defer { close(descriptor) }
        let bytes = Array(text.utf8)
        let written = bytes.withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
        return written == bytes.count ? 0 : (written < 0 ? errno : EIO)
    }
}
