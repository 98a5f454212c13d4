import ComityCore
import Foundation
import Logging

/// Limits through cgroups: the attempt's cgroup is created before the job starts, its first process joins it before
/// `exec`, and after the job it is emptied, checked for OOM kills and removed.
extension JobRunner {
    /// The script that starts a limited job: `sh -c SCRIPT comity-job N PROCS… PROGRAM ARGS…` writes its own pid
    /// into the N `cgroup.procs` files, then `exec`s the program, so the job's first process is in its cgroup before
    /// the job's code runs, keeps its pid (and process group), and everything it forks is limited too.
    package static let joinScript =
        #"n=$1; shift; while [ "$n" -gt 0 ]; do echo $$ > "$1" || { echo "comity: cannot join the job's cgroup $1" >&2; exit 125; }; shift; n=$((n - 1)); done; exec "$@""#

    /// Creates the attempt's cgroup (``CGroupHierarchy/create(name:limits:)``) and rewrites the job's command to
    /// join it (``joinScript``).
    ///
    /// The program is looked up here, in the job's `PATH`, so that a missing command fails as it does unlimited.
    func limit(_ job: inout Job, program: String, in hierarchy: CGroupHierarchy) -> Result<CGroup, CGroupError> {
        guard let path = Self.resolve(program, in: job) else {
            return .failure(CGroupError("cannot start \(program): command not found"))
        }
        let limits = CGroupLimits(
            memoryBytes: job.resources?.memoryBytes,
            cpuMillis: job.resources?.cpuMillis,
            pids: configuration.pidsLimit
        )
        let cgroup: CGroup
        do {
            cgroup = try hierarchy.create(name: "comity-\(job.attempt)", limits: limits)
        } catch {
            logger.warning("cannot create the job's cgroup", metadata: ["error": "\(error)"])
            return .failure(CGroupError("cannot create the job's cgroup: \(error.message)"))
        }
        logger.debug("job cgroup created", metadata: ["cgroup.folders": "\(cgroup.folders)"])
        let files = cgroup.procsFiles
        job.command =
            ["/bin/sh", "-c", Self.joinScript, "comity-job", String(files.count)] + files + [path]
            + job.command.dropFirst()
        return .success(cgroup)
    }

    /// The executable `program` names for `job`: as is when absolute, relative to the work folder when it holds a
    /// `/`, else the first match in the job's `PATH`; `nil` when there is no such executable file.
    static func resolve(_ program: String, in job: Job) -> String? {
        let manager = FileManager.default
        if program.contains("/") {
            let path = program.hasPrefix("/") ? program : job.workDirectory + "/" + program
            return manager.isExecutableFile(atPath: path) ? path : nil
        }
        let searchPath = job.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        for folder in searchPath.split(separator: ":") where !folder.isEmpty {
            let base = folder.hasPrefix("/") ? String(folder) : job.workDirectory + "/" + folder
            let candidate = base + "/" + program
            var isDirectory: ObjCBool = false
            if manager.fileExists(atPath: candidate, isDirectory: &isDirectory), !isDirectory.boolValue,
                manager.isExecutableFile(atPath: candidate)
            {
                return candidate
            }
        }
        return nil
    }

    /// After the job: kills what is left in its cgroup, reads the OOM counter, removes the cgroup, and turns a
    /// failure after an OOM kill into ``Outcome/oomKilled(_:)``.
    ///
    /// Any OOM kill in the cgroup counts, not only the first process's: a shell or launcher whose worker the kernel
    /// killed usually exits non-zero itself. A job that exits 0 anyway, or that the runner stopped, keeps its outcome.
    func finish(_ cgroup: CGroup, outcome: Outcome) async -> Outcome {
        if await !cgroup.killAll() {
            logger.warning("job cgroup kept processes after SIGKILL", metadata: ["cgroup.name": "\(cgroup.name)"])
        }
        let kills = cgroup.oomKills()
        let left = await cgroup.remove()
        if !left.isEmpty {
            logger.warning("cannot remove the job's cgroup", metadata: ["cgroup.folders": "\(left)"])
        }
        guard kills > 0, case .exited(let code) = outcome, code != 0 else { return outcome }
        let limit = cgroup.limits.memoryBytes.map(Quantity.formatBytes) ?? "unknown"
        logger.info("job killed for exceeding its memory", metadata: ["oom.kills": "\(kills)", "memory.limit": "\(limit)"])
        return .oomKilled("memory limit \(limit) exceeded")
    }
}
