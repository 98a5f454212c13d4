import ComityAPI
import Foundation
import Logging

/// A note, kept in `DIR/running/<attempt>.json` while an attempt's processes may be alive, so that an agent started
/// after a crash (or `SIGKILL`) can find and kill what its predecessor left behind.
package struct RunningRecord: Codable, Sendable, Hashable {
    package var attempt: Int64
    package var jobId: Int64
    /// The job's process group id (the pid of its first process).
    package var pgid: Int32
    /// `/proc/sys/kernel/random/boot_id` when the job started; after a reboot the pgid means nothing.
    package var bootId: String?
    package var startedAt: Date

    package init(attempt: Int64, jobId: Int64, pgid: Int32, bootId: String?, startedAt: Date) {
        self.attempt = attempt
        self.jobId = jobId
        self.pgid = pgid
        self.bootId = bootId
        self.startedAt = startedAt
    }

    /// Writes the record (atomically) into the state folder.
    package func save(in state: StateDirectory) throws {
        try StateDirectory.writePrivately(
            try WireJSON.encoder().encode(self),
            to: state.runningRecordPath(attempt: attempt)
        )
    }

    /// Deletes the record of `attempt`, if any.
    package static func remove(attempt: Int64, in state: StateDirectory) {
        try? FileManager.default.removeItem(atPath: state.runningRecordPath(attempt: attempt))
    }

    /// Every record in the state folder; unreadable files are logged and deleted.
    package static func loadAll(in state: StateDirectory, logger: Logger) -> [RunningRecord] {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: state.runningPath) else { return [] }
        var records: [RunningRecord] = []
        for name in names.sorted() {
            let path = state.runningPath + "/" + name
            guard name.hasSuffix(".json"), let data = FileManager.default.contents(atPath: path),
                let record = try? WireJSON.decoder().decode(RunningRecord.self, from: data)
            else {
                logger.warning("unreadable running record removed", metadata: ["file": "\(path)"])
                try? FileManager.default.removeItem(atPath: path)
                continue
            }
            records.append(record)
        }
        return records
    }

    /// Kills the process groups that records in the state folder left behind, then deletes the records.
    ///
    /// A group is killed only if it is plausibly still the job's: same boot, and (where `/proc` can be read) at least
    /// one live member whose environment says `COMITY_ATTEMPT_ID=<attempt>`. A pgid that was freed and reused by an
    /// unrelated group is left alone.
    ///
    /// - Returns: the records found, so their attempts can be reported to the server.
    package static func killLeftovers(
        in state: StateDirectory,
        grace: Duration,
        logger: Logger
    ) async -> [RunningRecord] {
        let records = loadAll(in: state, logger: logger)
        let bootID = ProcessTable.bootID()
        for record in records {
            var metadata: Logger.Metadata = [
                "attempt.id": "\(record.attempt)", "job.id": "\(record.jobId)", "process.pgid": "\(record.pgid)",
            ]
            if record.bootId == nil || bootID == nil || record.bootId == bootID, isStillTheJob(record) {
                let isGone = await ProcessGroup.terminate(record.pgid, grace: grace)
                metadata["group.gone"] = "\(isGone)"
                logger.warning("killed processes left by a previous agent", metadata: metadata)
            } else {
                logger.info("previous agent's job already gone", metadata: metadata)
            }
            remove(attempt: record.attempt, in: state)
        }
        return records
    }

    /// Whether the record's group still runs the record's attempt (see ``killLeftovers(in:grace:logger:)``).
    package static func isStillTheJob(_ record: RunningRecord) -> Bool {
        guard ProcessGroup.exists(record.pgid) else { return false }
        guard let members = ProcessTable.members(ofGroup: record.pgid) else { return true }
        return members.contains { member in
            !member.isZombie && ProcessTable.environment(of: member.pid)?["COMITY_ATTEMPT_ID"] == String(record.attempt)
        }
    }
}
