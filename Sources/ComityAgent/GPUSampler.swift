import ComityAPI
import ComityCore
import Foundation
import Logging
import Synchronization

/// Samples the GPU memory and utilization of one job while it runs, for the usage record of its finish report.
///
/// Every ``Configuration/interval`` (the first sample ``Configuration/firstSample`` after the job starts) it runs
/// `nvidia-smi --query-compute-apps=pid,gpu_uuid,used_memory` and `nvidia-smi --query-gpu=uuid,utilization.gpu,
/// memory.used` and keeps, per assigned device: the most memory the job's processes held at once, the most memory in
/// use on the device, and the mean and highest utilization. The job's processes are those of its process group and
/// their descendants (`/proc`); when the runner reports no process group (`0`), every process on an assigned device
/// counts, since the device is the job's alone. A process on a MIG device is reported under its parent GPU's UUID;
/// it counts for the job's first MIG device of that GPU. Utilization is per whole GPU, so MIG devices have none.
package final class GPUSampler: Sendable {
    package struct Configuration: Sendable {
        /// Time between samples.
        package var interval: Duration = .seconds(5)
        /// Time from the job's start to the first sample.
        package var firstSample: Duration = .seconds(1)
        /// How long one `nvidia-smi` call may take before the sample is skipped.
        package var timeout: Duration = .seconds(10)

        package init(interval: Duration = .seconds(5), firstSample: Duration = .seconds(1)) {
            self.interval = interval
            self.firstSample = firstSample
        }
    }

    package let configuration: Configuration
    /// The `nvidia-smi` to run; `nil` disables sampling.
    package let nvidiaSMI: String?
    private let accumulator: Mutex<GPUUsageAccumulator>
    private let processGroup: Mutex<Int32?>
    private let started: (stream: AsyncStream<Void>, continuation: AsyncStream<Void>.Continuation)
    private let stopped: (stream: AsyncStream<Void>, continuation: AsyncStream<Void>.Continuation)
    private let logger: Logger

    /// - Parameters:
    ///   - devices: the job's GPU UUIDs (``JobRunner/Job/gpuDevices``); none disables sampling.
    ///   - inventory: the host's GPUs, to find MIG devices' parents.
    ///   - nvidiaSMI: the `nvidia-smi` to run; `nil` disables sampling.
    package init(
        devices: [String],
        inventory: [GPU],
        nvidiaSMI: String?,
        configuration: Configuration = Configuration(),
        logger: Logger
    ) {
        var parents: [String: String] = [:]
        for gpu in inventory { if let parent = gpu.parentUuid { parents[gpu.uuid] = parent } }
        self.configuration = configuration
        self.nvidiaSMI = devices.isEmpty ? nil : nvidiaSMI
        self.accumulator = Mutex(GPUUsageAccumulator(devices: devices, parents: parents))
        self.processGroup = Mutex(nil)
        self.started = AsyncStream<Void>.makeStream()
        self.stopped = AsyncStream<Void>.makeStream()
        self.logger = logger
    }

    /// Tells the sampler the job runs, in process group `pgid` (`0` when there is none on this host).
    package func jobStarted(processGroup pgid: Int32) {
        processGroup.withLock { $0 = pgid }
        started.continuation.yield()
        started.continuation.finish()
    }

    /// Samples from the job's start until ``stop()`` (or cancellation); returns at once when sampling is disabled.
    package func run() async {
        guard let nvidiaSMI else { return }
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.sampleUntilCancelled(nvidiaSMI) }
            group.addTask { for await _ in self.stopped.stream {} }
            await group.next()
            group.cancelAll()
        }
    }

    /// Ends ``run()``: the job has ended. A sample in flight is dropped.
    package func stop() {
        stopped.continuation.finish()
    }

    /// Runs `body` (the runner call) while sampling, and stops sampling when it returns.
    package func sampling<Result: Sendable>(_ body: () async -> Result) async -> Result {
        async let sampled: Void = run()
        let result = await body()
        stop()
        await sampled
        return result
    }

    /// The usage record: `nil` when nothing was sampled (no GPUs, no `nvidia-smi`, or a job shorter than the first
    /// sample).
    package var usage: AttemptUsage? {
        let seconds = Double(configuration.interval.components.seconds)
            + Double(configuration.interval.components.attoseconds) / 1e18
        return accumulator.withLock { $0.usage(sampleIntervalSeconds: seconds) }
    }

    private func sampleUntilCancelled(_ nvidiaSMI: String) async {
        for await _ in started.stream { break }
        guard !Task.isCancelled, let pgid = processGroup.withLock({ $0 }) else { return }
        var delay = configuration.firstSample
        while true {
            do { try await Task.sleep(for: delay) } catch { return }
            delay = configuration.interval
            do {
                let timeout = configuration.timeout
                async let apps = Inventory.run(nvidiaSMI, NvidiaSMI.computeAppsArguments, timeout: timeout)
                async let readings = Inventory.run(nvidiaSMI, NvidiaSMI.usageArguments, timeout: timeout)
                let sample = GPUUsageAccumulator.Sample(
                    apps: try NvidiaSMI.parseComputeApps(try await apps),
                    readings: try NvidiaSMI.parseUsage(try await readings),
                    jobProcesses: pgid > 0 ? Self.jobProcesses(of: pgid, in: Self.processTable()) : nil
                )
                guard !Task.isCancelled else { return }
                accumulator.withLock { $0.add(sample) }
            } catch {
                if Task.isCancelled { return }
                logger.debug("gpu sample skipped", metadata: ["error": "\(error)"])
            }
        }
    }

    /// Parses `--gpu-sample-interval`: `5s`, `1m`, `500ms` or a number of seconds, from 100 ms to 1 h.
    ///
    /// - Throws: ``AgentError`` naming the option.
    package static func parseInterval(_ text: String) throws(AgentError) -> Duration {
        let trimmed = text.trimming(" ")
        var interval: Duration?
        if trimmed.hasSuffix("ms"), let millis = Int64(trimmed.dropLast(2)) {
            interval = .milliseconds(millis)
        } else if let seconds = Quantity.seconds(trimmed) {
            interval = .seconds(seconds)
        }
        guard let interval, interval >= .milliseconds(100), interval <= .seconds(3_600) else {
            throw AgentError(
                .configuration,
                "--gpu-sample-interval: expected a duration from 100ms to 1h, such as 5s or 500ms, got \"\(text)\""
            )
        }
        return interval
    }

    /// Every process of `/proc` (empty where it cannot be read).
    static func processTable() -> [ProcessTable.Entry] {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
        return names.compactMap { name in
            guard name.first?.isNumber == true,
                let text = try? String(contentsOfFile: "/proc/\(name)/stat", encoding: .utf8)
            else { return nil }
            return ProcessTable.parseStat(text)
        }
    }

    /// The job's processes: those in process group `pgid` and their descendants (which may have left the group,
    /// as bubblewrap's do).
    package static func jobProcesses(of pgid: Int32, in table: [ProcessTable.Entry]) -> Set<Int32> {
        var members = Set(table.filter { $0.group == pgid || $0.pid == pgid }.map(\.pid))
        var children: [Int32: [Int32]] = [:]
        for entry in table { children[entry.parent, default: []].append(entry.pid) }
        var pending = Array(members)
        while let pid = pending.popLast() {
            for child in children[pid] ?? [] where members.insert(child).inserted { pending.append(child) }
        }
        return members
    }
}

/// The running totals of a job's GPU samples (see ``GPUSampler``).
package struct GPUUsageAccumulator: Sendable, Hashable {
    /// One round of `nvidia-smi` answers.
    package struct Sample: Sendable, Hashable {
        package var apps: [NvidiaSMI.ComputeApp]
        package var readings: [NvidiaSMI.UsageReading]
        /// The job's process ids; `nil` to count every process on the job's devices.
        package var jobProcesses: Set<Int32>?

        package init(apps: [NvidiaSMI.ComputeApp], readings: [NvidiaSMI.UsageReading], jobProcesses: Set<Int32>?) {
            self.apps = apps
            self.readings = readings
            self.jobProcesses = jobProcesses
        }
    }

    private struct Totals: Hashable {
        var samples = 0
        var maxMemoryBytes: Int64 = 0
        var maxDeviceMemoryBytes: Int64?
        var utilizationSum = 0
        var utilizationCount = 0
        var maxUtilization: Int?
    }

    package let devices: [String]
    /// MIG device UUID → its GPU's UUID.
    package let parents: [String: String]
    private var totals: [Totals]

    package init(devices: [String], parents: [String: String] = [:]) {
        self.devices = devices
        self.parents = parents
        self.totals = Array(repeating: Totals(), count: devices.count)
    }

    /// Adds one round of answers.
    package mutating func add(_ sample: Sample) {
        var memory = Array(repeating: Int64(0), count: devices.count)
        for app in sample.apps {
            if let processes = sample.jobProcesses, !processes.contains(app.pid) { continue }
            guard let bytes = app.usedMemoryBytes,
                let slot = devices.firstIndex(where: { $0 == app.gpuUuid || parents[$0] == app.gpuUuid })
            else { continue }
            memory[slot] += bytes
        }
        for (slot, device) in devices.enumerated() {
            totals[slot].samples += 1
            totals[slot].maxMemoryBytes = max(totals[slot].maxMemoryBytes, memory[slot])
            guard let reading = sample.readings.first(where: { $0.uuid == device }) else { continue }
            if let used = reading.memoryUsedBytes {
                totals[slot].maxDeviceMemoryBytes = max(totals[slot].maxDeviceMemoryBytes ?? 0, used)
            }
            if let utilization = reading.utilizationPercent {
                totals[slot].utilizationSum += utilization
                totals[slot].utilizationCount += 1
                totals[slot].maxUtilization = max(totals[slot].maxUtilization ?? 0, utilization)
            }
        }
    }

    /// The record so far; `nil` before the first sample.
    package func usage(sampleIntervalSeconds: Double) -> AttemptUsage? {
        guard totals.contains(where: { $0.samples > 0 }) else { return nil }
        let gpus = zip(devices, totals).map { device, totals in
            GPUUsage(
                uuid: device,
                samples: totals.samples,
                maxMemoryBytes: totals.maxMemoryBytes,
                maxDeviceMemoryBytes: totals.maxDeviceMemoryBytes,
                meanUtilizationPercent: totals.utilizationCount > 0
                    ? Double(totals.utilizationSum) / Double(totals.utilizationCount) : nil,
                maxUtilizationPercent: totals.maxUtilization
            )
        }
        return AttemptUsage(gpus: gpus, sampleIntervalSeconds: sampleIntervalSeconds)
    }
}

extension NvidiaSMI {
    /// The processes using GPUs and their memory.
    package static let computeAppsArguments = [
        "--query-compute-apps=pid,gpu_uuid,used_memory", "--format=csv,noheader,nounits",
    ]
    /// Each GPU's utilization and memory in use.
    package static let usageArguments = [
        "--query-gpu=uuid,utilization.gpu,memory.used", "--format=csv,noheader,nounits",
    ]

    /// One line of `--query-compute-apps=pid,gpu_uuid,used_memory`.
    package struct ComputeApp: Sendable, Hashable {
        package var pid: Int32
        /// The GPU's UUID (a MIG device's parent GPU for a process on a MIG device).
        package var gpuUuid: String
        /// `nil` where the driver does not say (`[N/A]`).
        package var usedMemoryBytes: Int64?

        package init(pid: Int32, gpuUuid: String, usedMemoryBytes: Int64?) {
            self.pid = pid
            self.gpuUuid = gpuUuid
            self.usedMemoryBytes = usedMemoryBytes
        }
    }

    /// One line of `--query-gpu=uuid,utilization.gpu,memory.used`.
    package struct UsageReading: Sendable, Hashable {
        package var uuid: String
        /// `nil` where the GPU does not say (`[N/A]`, as in MIG mode).
        package var utilizationPercent: Int?
        package var memoryUsedBytes: Int64?

        package init(uuid: String, utilizationPercent: Int?, memoryUsedBytes: Int64?) {
            self.uuid = uuid
            self.utilizationPercent = utilizationPercent
            self.memoryUsedBytes = memoryUsedBytes
        }
    }

    /// Parses `--query-compute-apps=pid,gpu_uuid,used_memory --format=csv,noheader,nounits` (no lines when no
    /// process uses a GPU; a one-column message such as "No running processes found" is skipped).
    ///
    /// - Throws: ``ParseError`` naming the line for a non-numeric pid or a line of two columns.
    package static func parseComputeApps(_ output: String) throws(ParseError) -> [ComputeApp] {
        var apps: [ComputeApp] = []
        for (line, columns) in csvRows(output) where columns.count > 1 {
            if line == 1, columns[0].lowercased() == "pid" { continue }
            guard columns.count >= 3 else {
                throw ParseError(line: line, message: "expected pid, gpu_uuid, used_memory")
            }
            guard let pid = Int32(columns[0]), pid > 0 else {
                throw ParseError(line: line, message: "expected a process id, got \"\(columns[0])\"")
            }
            let bytes = mebibytes(columns[2]).map { $0 << 20 }
            apps.append(ComputeApp(pid: pid, gpuUuid: columns[1], usedMemoryBytes: bytes))
        }
        return apps
    }

    /// Parses `--query-gpu=uuid,utilization.gpu,memory.used --format=csv,noheader,nounits`.
    ///
    /// - Throws: ``ParseError`` naming the line for a line of fewer than three columns or without a UUID.
    package static func parseUsage(_ output: String) throws(ParseError) -> [UsageReading] {
        var readings: [UsageReading] = []
        for (line, columns) in csvRows(output) {
            if line == 1, columns[0].lowercased() == "uuid" { continue }
            guard columns.count >= 3, !columns[0].isEmpty else {
                throw ParseError(line: line, message: "expected uuid, utilization.gpu, memory.used")
            }
            var utilization = columns[1]
            if utilization.hasSuffix("%") { utilization = utilization.dropLast().trimming(" ") }
            readings.append(
                UsageReading(
                    uuid: columns[0],
                    utilizationPercent: Int(utilization).flatMap { (0...100).contains($0) ? $0 : nil },
                    memoryUsedBytes: mebibytes(columns[2]).map { $0 << 20 }
                )
            )
        }
        return readings
    }
}

extension AgentService {
    /// The sampler of one attempt's GPUs (``AgentConfiguration/gpuSampleInterval``); it samples nothing for a job
    /// without GPUs or on a host without `nvidia-smi`.
    func gpuSampler(for assignment: Assignment, inventory: [GPU], logger: Logger) -> GPUSampler {
        let devices = JobEnvironment.visibleDevices(for: assignment).split(separator: ",").map(String.init)
        return GPUSampler(
            devices: devices,
            inventory: inventory,
            nvidiaSMI: devices.isEmpty ? nil : Inventory.findOnPath("nvidia-smi"),
            configuration: GPUSampler.Configuration(interval: configuration.gpuSampleInterval),
            logger: logger
        )
    }
}
