import ComityCore
import Foundation

/// Parsing of what `nvidia-smi` prints: the GPU query, the `-L` listing (MIG devices), and the usage queries the
/// ``GPUSampler`` reads.
package enum NvidiaSMI {
    /// The arguments the agent queries GPUs with.
    package static let queryArguments = [
        "--query-gpu=index,uuid,name,memory.total,mig.mode.current", "--format=csv,noheader,nounits",
    ]
    /// The query of drivers that do not know `mig.mode.current` (before R450): GPUs without MIG.
    package static let legacyQueryArguments = [
        "--query-gpu=index,uuid,name,memory.total", "--format=csv,noheader,nounits",
    ]
    /// The listing that names MIG devices, read when a GPU is in MIG mode.
    package static let listArguments = ["-L"]

    /// A line of `nvidia-smi` output that could not be read.
    package struct ParseError: Error, Sendable, Hashable, CustomStringConvertible {
        /// 1-based line number.
        package var line: Int
        package var message: String

        package var description: String { "nvidia-smi output line \(line): \(message)" }
    }

    /// Parses the CSV answer of the GPU query into physical GPUs, in the order printed.
    ///
    /// Reads the columns `index, uuid, name, memory.total` (in MiB) and, when there is a fifth, `mig.mode.current`:
    /// `Enabled` and `Disabled` set ``GPU/migMode``; anything else there (`[N/A]`, or another column of a wider
    /// query, such as the fixtures' `memory.used`) leaves it `nil`. Further columns are ignored. Tolerates a header
    /// line and `MiB` units (`--format=csv`), blank lines and CRLF. A GPU name cannot contain a comma in
    /// `nvidia-smi`'s CSV, so a plain split is exact. A GPU in MIG mode may report no memory (its memory is its
    /// MIG devices'); it gets `0`.
    ///
    /// - Throws: ``ParseError`` naming the line for a line with too few columns, a non-numeric index or memory
    ///   (`[N/A]`, `[Not Supported]`) of a GPU not in MIG mode, or an index or UUID seen twice.
    package static func parseGPUs(_ output: String) throws(ParseError) -> [GPU] {
        var gpus: [GPU] = []
        for (lineNumber, columns) in csvRows(output) {
            if lineNumber == 1, columns.first?.lowercased() == "index" { continue }
            let line = columns.joined(separator: ", ")
            guard columns.count >= 4 else {
                throw ParseError(line: lineNumber, message: "expected index, uuid, name, memory.total; got \"\(line)\"")
            }
            guard let index = Int(columns[0]), index >= 0 else {
                throw ParseError(line: lineNumber, message: "expected a GPU index, got \"\(columns[0])\"")
            }
            let migMode: Bool? =
                switch columns.count > 4 ? columns[4] : "" {
                case "Enabled": true
                case "Disabled": false
                default: nil
                }
            var mebibytes = mebibytes(columns[3])
            if mebibytes == nil, migMode == true { mebibytes = 0 }
            guard let mebibytes, mebibytes > 0 || migMode == true else {
                throw ParseError(line: lineNumber, message: "expected memory.total in MiB, got \"\(columns[3])\"")
            }
            guard !columns[1].isEmpty else { throw ParseError(line: lineNumber, message: "expected a GPU UUID") }
            guard !columns[2].isEmpty else { throw ParseError(line: lineNumber, message: "expected a GPU name") }
            guard !gpus.contains(where: { $0.index == index }) else {
                throw ParseError(line: lineNumber, message: "GPU index \(index) listed twice")
            }
            guard !gpus.contains(where: { $0.uuid == columns[1] }) else {
                throw ParseError(line: lineNumber, message: "GPU UUID \(columns[1]) listed twice")
            }
            gpus.append(
                GPU(index: index, uuid: columns[1], model: columns[2], memoryBytes: mebibytes << 20, migMode: migMode)
            )
        }
        return gpus
    }

    /// One GPU of `nvidia-smi -L`, with the MIG devices listed under it.
    package struct ListedGPU: Sendable, Hashable {
        package var index: Int
        package var name: String
        package var uuid: String
        package var migDevices: [MIGDevice]

        package init(index: Int, name: String, uuid: String, migDevices: [MIGDevice] = []) {
            self.index = index
            self.name = name
            self.uuid = uuid
            self.migDevices = migDevices
        }
    }

    /// One MIG device of `nvidia-smi -L`: `  MIG 3g.40gb     Device  0: (UUID: MIG-…)`.
    package struct MIGDevice: Sendable, Hashable {
        /// The profile, `3g.40gb` (or a compute-instance profile, `1c.3g.40gb`).
        package var profile: String
        /// The device number within its GPU.
        package var device: Int
        package var uuid: String

        package init(profile: String, device: Int, uuid: String) {
            self.profile = profile
            self.device = device
            self.uuid = uuid
        }
    }

    /// Parses `nvidia-smi -L`: `GPU 0: NAME (UUID: GPU-…)` lines, each followed by its indented `MIG …` lines.
    ///
    /// Other lines (blank ones, or anything a newer driver adds) are skipped.
    ///
    /// - Throws: ``ParseError`` naming the line for a `GPU` or `MIG` line without a UUID or number, or a `MIG` line
    ///   before any `GPU` line.
    package static func parseList(_ output: String) throws(ParseError) -> [ListedGPU] {
        var gpus: [ListedGPU] = []
        let lines = output.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline)
        for (offset, rawLine) in lines.enumerated() {
            let lineNumber = offset + 1
            let line = rawLine.trimming(" \t\r")
            guard let uuidStart = line.range(of: "(UUID: "), let uuidEnd = line.lastIndex(of: ")"),
                uuidStart.upperBound < uuidEnd
            else {
                if line.hasPrefix("GPU ") || line.hasPrefix("MIG ") {
                    throw ParseError(line: lineNumber, message: "expected \"(UUID: …)\" in \"\(line)\"")
                }
                continue
            }
            let uuid = line[uuidStart.upperBound..<uuidEnd].trimming(" ")
            let head = line[..<uuidStart.lowerBound]
            if line.hasPrefix("GPU ") {
                guard let colon = head.firstIndex(of: ":"), let index = Int(head.dropFirst(4)[..<colon].trimming(" "))
                else {
                    throw ParseError(line: lineNumber, message: "expected \"GPU N: NAME\", got \"\(line)\"")
                }
                let name = head[head.index(after: colon)...].trimming(" ")
                gpus.append(ListedGPU(index: index, name: name, uuid: uuid))
            } else if line.hasPrefix("MIG ") {
                // `MIG 3g.40gb     Device  0:`: the profile, the word Device, the number and a colon.
                let words = head.dropFirst(4).split(separator: " ")
                guard words.count >= 3, words[1] == "Device", let device = Int(words[2].trimming(":")) else {
                    throw ParseError(line: lineNumber, message: "expected \"MIG PROFILE Device N:\", got \"\(line)\"")
                }
                guard !gpus.isEmpty else {
                    throw ParseError(line: lineNumber, message: "MIG device listed before any GPU")
                }
                gpus[gpus.count - 1].migDevices.append(MIGDevice(profile: String(words[0]), device: device, uuid: uuid))
            }
        }
        return gpus
    }

    /// The memory a MIG profile names, as a lower bound: `3g.40gb` is 40 GB (10⁹ bytes; a 3g.40gb device has
    /// 40,192 MiB). Reads the last `…gb` part, so `1c.3g.40gb` and `1g.10gb+me` work too.
    package static func migMemoryBytes(profile: String) -> Int64? {
        for part in profile.split(separator: ".").reversed() {
            let size = part.split(separator: "+").first.map { $0.lowercased() } ?? ""
            if size.hasSuffix("gb"), let gigabytes = Int64(size.dropLast(2)), gigabytes > 0 {
                return gigabytes * 1_000_000_000
            }
        }
        return nil
    }

    /// The devices a host offers, from the GPU query and (when a GPU is in MIG mode) the `-L` listing.
    package struct Devices: Sendable, Hashable {
        /// The physical GPUs, as the query printed them (``GPU/index`` is `nvidia-smi`'s).
        package var physical: [GPU]
        /// The schedulable devices: each GPU not in MIG mode, and in place of each GPU in MIG mode its MIG
        /// devices, numbered 0, 1, … in that order.
        package var schedulable: [GPU]
        /// What was left out and why (a GPU in MIG mode without MIG devices, a profile without a size).
        package var warnings: [String]
    }

    /// Combines the GPU query and the `-L` listing into the schedulable devices (see ``Devices``).
    ///
    /// - Parameters:
    ///   - physical: ``parseGPUs(_:)``'s answer.
    ///   - listing: ``parseList(_:)``'s answer; may be empty when no GPU is in MIG mode.
    package static func devices(physical: [GPU], listing: [ListedGPU]) -> Devices {
        var schedulable: [GPU] = []
        var warnings: [String] = []
        for gpu in physical {
            guard gpu.migMode == true else {
                var whole = gpu
                whole.index = schedulable.count
                schedulable.append(whole)
                continue
            }
            let migDevices = listing.first { $0.uuid == gpu.uuid }?.migDevices ?? []
            if migDevices.isEmpty {
                warnings.append("GPU \(gpu.index) (\(gpu.uuid)) is in MIG mode but has no MIG devices: not offered")
            }
            for device in migDevices {
                guard let memory = migMemoryBytes(profile: device.profile) else {
                    warnings.append("MIG device \(device.uuid): no size in profile \"\(device.profile)\": not offered")
                    continue
                }
                schedulable.append(
                    GPU(
                        index: schedulable.count,
                        uuid: device.uuid,
                        model: "\(gpu.model) MIG \(device.profile)",
                        memoryBytes: memory,
                        mig: device.profile,
                        parentUuid: gpu.uuid,
                        migMode: true
                    )
                )
            }
        }
        if schedulable.count > 1024 {
            warnings.append("\(schedulable.count) GPU devices found; only the first 1024 are offered")
            schedulable.removeLast(schedulable.count - 1024)
        }
        return Devices(physical: physical, schedulable: schedulable, warnings: warnings)
    }

    /// The non-empty lines of a CSV answer, split into trimmed columns, with their 1-based line numbers.
    static func csvRows(_ output: String) -> [(line: Int, columns: [String])] {
        var rows: [(line: Int, columns: [String])] = []
        let lines = output.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline)
        for (offset, rawLine) in lines.enumerated() {
            let line = rawLine.trimming(" \t\r")
            if line.isEmpty { continue }
            let columns = line.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimming(" \t") }
            rows.append((offset + 1, columns))
        }
        return rows
    }

    /// A MiB count, with or without a ` MiB` unit; `nil` for `[N/A]` and the like.
    static func mebibytes(_ text: String) -> Int64? {
        var text = text
        if text.hasSuffix("MiB") { text = text.dropLast(3).trimming(" ") }
        guard let value = Int64(text), value >= 0 else { return nil }
        return value
    }
}

extension StringProtocol {
    /// The text without leading and trailing characters from `set`.
    func trimming(_ set: String) -> String {
        var slice = self[...]
        while let first = slice.first, set.contains(first) { slice = slice.dropFirst() }
        while let last = slice.last, set.contains(last) { slice = slice.dropLast() }
        return String(slice)
    }
}
