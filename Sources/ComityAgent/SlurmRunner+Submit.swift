import ComityCore
import Foundation
import Logging

extension SlurmRunner {
    /// Variables that Slurm sets itself for a job with GPUs (from its GRES): the agent's own device list, made for a
    /// host whose GPUs it enumerated, would be wrong on the node.
    static let gpuVisibilityNames: Set<String> = ["CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES"]

    /// The batch script: `#!/bin/sh`, one `export` per variable of the job's environment (sorted, single-quoted), then
    /// `exec` of the command, so the job's first process is the command itself and receives Slurm's signals.
    ///
    /// A job without GPUs keeps the empty `CUDA_VISIBLE_DEVICES`/`NVIDIA_VISIBLE_DEVICES` the agent gives it (it sees
    /// no GPU); a job with GPUs gets Slurm's. Names that are not shell variable names are left out.
    package static func batchScript(for job: JobRunner.Job) -> String {
        let requestsGPUs = (job.resources?.gpus ?? 0) > 0
        var lines = [
            "#!/bin/sh",
            "# Comity attempt \(job.attempt) (\(sanitizedName(job.name))), submitted by comity-agent.",
        ]
        for (name, value) in job.environment.sorted(by: { $0.key < $1.key }) where isVariableName(name) {
            if requestsGPUs, gpuVisibilityNames.contains(name) { continue }
            lines.append("export \(name)=\(shellQuoted(value))")
        }
        lines.append("exec " + job.command.map(shellQuoted).joined(separator: " "))
        return lines.joined(separator: "\n") + "\n"
    }

    /// `sbatch`'s arguments for `job`: its name, partition, work folder, output files and resources.
    ///
    /// `--cpus-per-task` is the CPUs rounded up (at least 1), `--mem` the memory in MiB rounded up (left out for no
    /// memory: Slurm reads `--mem=0` as "all of the node's"), `--time` the runtime limit in minutes rounded up, and
    /// `--gres=gpu:N` is added only for a job with GPUs (the partition's nodes must define GPU GRES). The job is never
    /// requeued by Slurm (Comity requeues it) and gets no environment from the agent but the script's.
    package static func submitArguments(for job: JobRunner.Job, partition: String, script: String) -> [String] {
        var arguments = [
            "--parsable",
            "--job-name", "comity-\(job.attempt)-\(sanitizedName(job.name))",
            "--partition", partition,
            "--chdir", job.workDirectory,
            "--output", job.workDirectory + "/slurm-%j.out",
            "--error", job.workDirectory + "/slurm-%j.err",
            "--no-requeue",
            "--export=NONE",
        ]
        if let resources = job.resources {
            arguments += ["--cpus-per-task", String(max(1, (resources.cpuMillis + 999) / 1000))]
            if resources.memoryBytes > 0 {
                arguments += ["--mem", "\((resources.memoryBytes + (1 << 20) - 1) >> 20)M"]
            }
            if resources.gpus > 0 { arguments.append("--gres=gpu:\(resources.gpus)") }
        }
        if let seconds = job.maxRuntimeSeconds, seconds > 0 {
            arguments += ["--time", String(max(1, (seconds + 59) / 60))]
        }
        arguments.append(script)
        return arguments
    }

    /// The job's name as Slurm shows it: letters, digits, `-`, `_` and `.`, others replaced by `-`, at most 64.
    static func sanitizedName(_ name: String) -> String {
        let cleaned = String(
            name.unicodeScalars.prefix(64).map { scalar -> Character in
                ("a"..."z").contains(scalar) || ("A"..."Z").contains(scalar) || ("0"..."9").contains(scalar)
                    || "-_.".unicodeScalars.contains(scalar) ? Character(scalar) : "-"
            }
        )
        return cleaned.isEmpty ? "job" : cleaned
    }

    /// `text` in single quotes for `sh`, a `'` written as `'\''`.
    package static func shellQuoted(_ text: String) -> String {
        "'" + text.replacingOccurrences(of: "'", with: #"'\''"#) + "'"
    }

    static func isVariableName(_ name: String) -> Bool {
        guard let first = name.unicodeScalars.first, !("0"..."9").contains(first) else { return false }
        return name.unicodeScalars.allSatisfy {
            $0 == "_" || ("a"..."z").contains($0) || ("A"..."Z").contains($0) || ("0"..."9").contains($0)
        }
    }

    /// Cancels the Slurm jobs that attempts recorded in the state folder left behind (an agent killed while they
    /// ran); call it before ``RunningRecord/killLeftovers(in:grace:logger:)``, which deletes the records.
    ///
    /// A job is cancelled only while Slurm still runs it under the attempt's name (`comity-<attempt>-…`), so a job
    /// id that Slurm has since given to another job is left alone.
    package static func cancelLeftovers(in state: StateDirectory, commands: SlurmCommands, logger: Logger) async {
        for record in RunningRecord.loadAll(in: state, logger: logger) {
            let file = state.workDirectory(attempt: record.attempt) + "/" + jobIDFileName
            guard let data = FileManager.default.contents(atPath: file),
                let jobID = SlurmCommands.parseJobID(String(decoding: data, as: UTF8.self))
            else { continue }
            var metadata: Logger.Metadata = ["attempt.id": "\(record.attempt)", "slurm.job_id": "\(jobID)"]
            let shown = await commands.run("scontrol", ["-o", "show", "job", jobID])
            let fields = SlurmCommands.fields(ofScontrolLine: shown.output)
            guard shown.isSuccess, fields["JobName"]?.hasPrefix("comity-\(record.attempt)-") == true,
                let jobState = fields["JobState"], !SlurmCommands.terminalStates.contains(jobState)
            else {
                logger.info("previous agent's slurm job already gone", metadata: metadata)
                continue
            }
            let cancelled = await commands.run("scancel", [jobID])
            metadata["slurm.cancelled"] = "\(cancelled.isSuccess)"
            logger.warning("cancelled a slurm job left by a previous agent", metadata: metadata)
        }
    }
}
