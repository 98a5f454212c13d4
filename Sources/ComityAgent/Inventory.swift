import ComityCore
import Foundation
import Logging
import Subprocess

#if canImport(System)
import System
#else
import SystemPackage
#endif

/// Detection of what this host offers: CPUs, memory and NVIDIA GPUs.
package enum Inventory {
    /// Problems that make detection fail outright (a broken `nvidia-smi` only drops the GPUs, with a warning).
    package struct DetectionError: Error, Sendable, CustomStringConvertible {
        package var message: String
        package var description: String { message }
    }

    /// Detects the host's resources.
    ///
    /// CPUs are those this process may run on (`sched_getaffinity`), memory is `MemTotal` of `/proc/meminfo`, and
    /// GPUs come from `nvidia-smi` when it is on `PATH`. A failing or hanging (30 s) `nvidia-smi` means no GPUs are
    /// offered, with a warning: the agent never offers GPUs it could not verify.
    package static func detect(logger: Logger) async throws(DetectionError) -> HostResources {
        let cpus = cpuCount()
        guard let memory = memoryBytes() else {
            throw DetectionError(
                message: "cannot read the host's memory size from /proc/meminfo; pass --resources FILE"
            )
        }
        let gpus = await detectGPUs(logger: logger)
        return HostResources(cpuMillis: cpus * 1000, memoryBytes: memory, gpus: gpus)
    }

    /// The number of CPUs this process may run on: its affinity mask (`Cpus_allowed` of `/proc/self/status`, what
    /// `sched_getaffinity` reports), or Foundation's count where there is none.
    package static func cpuCount() -> Int {
        if let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
            let count = parseCpusAllowed(text)
        {
            return count
        }
        return ProcessInfo.processInfo.activeProcessorCount
    }

    /// Counts the CPUs in the `Cpus_allowed:` hex mask of `/proc/<pid>/status` (`ff,ffffffff` style).
    package static func parseCpusAllowed(_ status: String) -> Int? {
        for line in status.split(whereSeparator: \.isNewline) where line.hasPrefix("Cpus_allowed:") {
            var count = 0
            for character in line.dropFirst("Cpus_allowed:".count) where character != "," && !character.isWhitespace {
                guard let nibble = character.hexDigitValue else { return nil }
                count += nibble.nonzeroBitCount
            }
            return count > 0 ? count : nil
        }
        return nil
    }

    /// The host's memory from `/proc/meminfo`, or Foundation's answer where there is none.
    package static func memoryBytes() -> Int64? {
        if let text = try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8), let bytes = parseMemTotal(text) {
            return bytes
        }
        let physical = ProcessInfo.processInfo.physicalMemory
        return physical > 0 ? Int64(clamping: physical) : nil
    }

    /// Reads `MemTotal:   131891368 kB` out of `/proc/meminfo`.
    package static func parseMemTotal(_ meminfo: String) -> Int64? {
        for line in meminfo.split(whereSeparator: \.isNewline) where line.hasPrefix("MemTotal:") {
            let words = line.dropFirst("MemTotal:".count).split(separator: " ")
            guard let amount = words.first.flatMap({ Int64($0) }) else { return nil }
            let unit = words.count > 1 ? words[1].lowercased() : ""
            return unit == "kb" ? amount * 1024 : amount
        }
        return nil
    }

    /// Runs `nvidia-smi` when it is on `PATH`; no GPUs when it is absent or fails.
    static func detectGPUs(logger: Logger) async -> [GPU] {
        guard let path = findOnPath("nvidia-smi") else {
            logger.debug("nvidia-smi not on PATH; no GPUs")
            return []
        }
        do {
            let devices = try await detectGPUDevices(nvidiaSMI: path, logger: logger)
            for warning in devices.warnings {
                logger.warning("gpu left out", metadata: ["reason": "\(warning)"])
            }
            logger.info(
                "gpus detected",
                metadata: [
                    "gpu.count": "\(devices.schedulable.count)",
                    "gpu.models": "\(Set(devices.schedulable.map(\.model)).sorted())",
                    "gpu.mig_devices": "\(devices.schedulable.filter { $0.mig != nil }.count)",
                ]
            )
            return devices.schedulable
        } catch {
            logger.warning("gpu detection failed; offering no GPUs", metadata: ["error": "\(error)"])
            return []
        }
    }

    /// Queries `nvidia-smi` at `path` for the host's GPUs and, when one is in MIG mode, its MIG devices.
    ///
    /// Falls back to the query without `mig.mode.current` when the driver rejects it (drivers before MIG).
    ///
    /// - Throws: ``DetectionError`` when `nvidia-smi` fails, hangs (`timeout`), or prints what cannot be parsed.
    package static func detectGPUDevices(
        nvidiaSMI path: String,
        timeout: Duration = .seconds(30),
        logger: Logger
    ) async throws(DetectionError) -> NvidiaSMI.Devices {
        let output: String
        do {
            output = try await run(path, NvidiaSMI.queryArguments, timeout: timeout)
        } catch {
            logger.debug(
                "MIG-aware GPU query failed; trying the query of older drivers",
                metadata: ["error": "\(error)"]
            )
            output = try await run(path, NvidiaSMI.legacyQueryArguments, timeout: timeout)
        }
        do {
            let physical = try NvidiaSMI.parseGPUs(output)
            var listing: [NvidiaSMI.ListedGPU] = []
            if physical.contains(where: { $0.migMode == true }) {
                listing = try NvidiaSMI.parseList(try await run(path, NvidiaSMI.listArguments, timeout: timeout))
            }
            return NvidiaSMI.devices(physical: physical, listing: listing)
        } catch let error as NvidiaSMI.ParseError {
            throw DetectionError(message: "\(error)")
        } catch let error as DetectionError {
            throw error
        } catch {
            throw DetectionError(message: "\(error)")
        }
    }

    /// Runs a tool and returns what it printed on standard output.
    ///
    /// - Throws: ``DetectionError`` when it cannot start, exits unsuccessfully, or runs longer than `timeout`.
    package static func run(
        _ path: String,
        _ arguments: [String],
        timeout: Duration
    ) async throws(DetectionError) -> String {
        let name = path.split(separator: "/").last.map(String.init) ?? path
        do {
            return try await withThrowingTaskGroup(of: String?.self) { group in
                group.addTask {
                    let result = try await Subprocess.run(
                        .path(FilePath(path)),
                        arguments: Arguments(arguments),
                        output: .string(limit: 4 << 20),
                        error: .string(limit: 64 << 10)
                    )
                    guard result.terminationStatus.isSuccess else {
                        let message = result.standardError.trimming(" \n")
                        let command = "\(name) \(arguments.joined(separator: " "))"
                        throw DetectionError(message: "\(command): \(result.terminationStatus) \(message)")
                    }
                    return result.standardOutput
                }
                group.addTask {
                    try await Task.sleep(for: timeout)
                    return nil
                }
                let first = try await group.next() ?? nil
                group.cancelAll()
                guard let first else { throw DetectionError(message: "\(name) did not answer within \(timeout)") }
                return first
            }
        } catch let error as DetectionError {
            throw error
        } catch {
            throw DetectionError(message: "\(name) \(arguments.joined(separator: " ")): \(error)")
        }
    }

    /// The first executable file called `name` in `path` (the agent's `PATH` by default); relative folders are skipped.
    package static func findOnPath(_ name: String, path: String? = nil) -> String? {
        let path = path ?? ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        for directory in path.split(separator: ":") where directory.hasPrefix("/") {
            let candidate = "\(directory)/\(name)"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }
}
