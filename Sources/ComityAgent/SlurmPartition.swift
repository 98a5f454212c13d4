import ComityCore
import Foundation

/// What a Slurm partition offers, as `sinfo` reports it: the capacity a gateway agent lends to the pool.
package enum SlurmPartition {
    /// Why the partition's capacity could not be read.
    package struct CapacityError: Error, Sendable, CustomStringConvertible {
        package var message: String
        package var description: String { message }
    }

    /// The answer of the Slurm probe (``probe(partition:commands:)``) for ``RuntimeProbe``.
    package enum Probe: Sendable, Hashable {
        /// `sinfo` lists the partition.
        case answers
        /// Why the partition cannot be used.
        case unavailable(String)
    }

    /// The `sinfo` format whose lines ``parseCapacity(_:partition:)`` totals: CPUs per node, memory per node (MiB),
    /// GRES per node, node count.
    package static let capacityFormat = "%c %m %G %D"

    /// Whether `name` can be a partition name on a command line: letters, digits, `-`, `_`, `.` (at most 128).
    package static func isPartitionName(_ name: String) -> Bool {
        !name.isEmpty && name.count <= 128
            && name.unicodeScalars.allSatisfy {
                ("a"..."z").contains($0) || ("A"..."Z").contains($0) || ("0"..."9").contains($0)
                    || "-_.".unicodeScalars.contains($0)
            }
    }

    /// Asks `sinfo` whether the partition exists and the controller answers.
    package static func probe(partition: String, commands: SlurmCommands) async -> Probe {
        let result = await commands.run("sinfo", ["-h", "-p", partition, "-o", "%P"])
        guard result.isSuccess else { return .unavailable("slurm: sinfo failed: \(result.complaint)") }
        guard !result.output.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else {
            return .unavailable("slurm: sinfo does not list partition \(partition)")
        }
        return .answers
    }

    /// The partition's whole capacity, from `sinfo -h -p P -o "%c %m %G %D"`.
    ///
    /// - Throws: ``CapacityError`` when `sinfo` fails or reports no nodes.
    package static func capacity(
        partition: String,
        commands: SlurmCommands
    ) async throws(CapacityError) -> HostResources {
        let result = await commands.run("sinfo", ["-h", "-p", partition, "-o", capacityFormat])
        guard result.isSuccess else {
            throw CapacityError(message: "sinfo -p \(partition) failed: \(result.complaint)")
        }
        return try parseCapacity(result.output, partition: partition)
    }

    /// Totals `sinfo -h -o "%c %m %G %D"` lines (one per group of alike nodes): CPUs and memory times nodes, and one
    /// ``GPU`` per GPU GRES (`gpu:4`, `gpu:a100:4(S:0-1)`, …) of every node.
    ///
    /// Slurm does not say what a GRES GPU is: each gets the GRES type as its model (`a100`; `gpu` when untyped), no
    /// UUID and no memory. A partner who wants jobs to match GPU models or memory describes the lent capacity in a
    /// `--resources` file instead.
    ///
    /// - Throws: ``CapacityError`` naming the line that cannot be read, or when there are no nodes.
    package static func parseCapacity(_ text: String, partition: String) throws(CapacityError) -> HostResources {
        var cpus = 0
        var memoryMiB: Int64 = 0
        var gpus: [GPU] = []
        var nodes = 0
        for line in text.split(whereSeparator: \.isNewline) {
            let words = line.split(separator: " ", omittingEmptySubsequences: true)
            guard words.count == 4, let nodeCPUs = leadingNumber(words[0]), let nodeMemory = leadingNumber(words[1]),
                let count = leadingNumber(words[3]), count > 0
            else {
                throw CapacityError(message: "sinfo -p \(partition): cannot read \"\(line)\" as CPUS MEMORY GRES NODES")
            }
            nodes += Int(count)
            cpus += Int(nodeCPUs * count)
            memoryMiB += nodeMemory * count
            for gres in parseGPUs(String(words[2])) {
                for _ in 0..<(gres.count * Int(count)) {
                    gpus.append(GPU(index: gpus.count, uuid: "", model: gres.type ?? "gpu", memoryBytes: 0))
                }
            }
        }
        guard nodes > 0 else { throw CapacityError(message: "sinfo -p \(partition) lists no nodes") }
        return HostResources(cpuMillis: cpus * 1000, memoryBytes: memoryMiB << 20, gpus: gpus)
    }

    /// The GPU entries of a node's GRES (`gpu:a100:2(S:0),gpu:1,mps:100` → `[(a100, 2), (nil, 1)]`); `(null)` and
    /// other GRES give none.
    package static func parseGPUs(_ gres: String) -> [(type: String?, count: Int)] {
        // Drop socket bindings such as "(S:0-1)" or "(S:0,1)" first: they may contain commas.
        var plain = ""
        var depth = 0
        for character in gres {
            if character == "(" {
                depth += 1
            } else if character == ")" {
                depth = max(0, depth - 1)
            } else if depth == 0 {
                plain.append(character)
            }
        }
        var found: [(type: String?, count: Int)] = []
        for entry in plain.split(separator: ",") {
            let parts = entry.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
            guard parts.first == "gpu", parts.count >= 2 else { continue }
            let type = parts.count >= 3 ? parts[1] : nil
            guard let count = Int(parts[parts.count - 1]), count > 0 else { continue }
            found.append((type, count))
        }
        return found
    }

    /// The number at the start of a `sinfo` field (`64`, or `64+` where nodes differ).
    private static func leadingNumber(_ word: Substring) -> Int64? {
        Int64(word.prefix { $0.isNumber })
    }
}
