import ComityCore

/// Parsing of `nvidia-smi --query-gpu=index,uuid,name,memory.total --format=csv,noheader,nounits`.
package enum NvidiaSMI {
    /// The arguments the agent runs `nvidia-smi` with.
    package static let queryArguments = ["--query-gpu=index,uuid,name,memory.total", "--format=csv,noheader,nounits"]

    /// A line of `nvidia-smi` output that could not be read.
    package struct ParseError: Error, Sendable, Hashable, CustomStringConvertible {
        /// 1-based line number.
        package var line: Int
        package var message: String

        package var description: String { "nvidia-smi output line \(line): \(message)" }
    }

    /// Parses the CSV answer into GPUs, in the order printed.
    ///
    /// Reads the first four columns (`index, uuid, name, memory.total` in MiB) and ignores any further ones, so the
    /// wider queries of the fixtures parse too. Tolerates a header line and `MiB` units (`--format=csv`), blank
    /// lines and CRLF. A GPU name cannot contain a comma in `nvidia-smi`'s CSV, so a plain split is exact.
    ///
    /// - Throws: ``ParseError`` naming the line for a line with too few columns, a non-numeric index or memory
    ///   (`[N/A]`, `[Not Supported]`), or an index seen twice.
    package static func parseGPUs(_ output: String) throws(ParseError) -> [GPU] {
        var gpus: [GPU] = []
        let lines = output.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline)
        for (offset, rawLine) in lines.enumerated() {
            let lineNumber = offset + 1
            let line = rawLine.trimming(" \t")
            if line.isEmpty { continue }
            let columns = line.split(separator: ",", omittingEmptySubsequences: false).map {
                $0.trimming(" \t")
            }
            if offset == 0, columns.first?.lowercased() == "index" { continue }
            guard columns.count >= 4 else {
                throw ParseError(line: lineNumber, message: "expected index, uuid, name, memory.total; got \"\(line)\"")
            }
            guard let index = Int(columns[0]), index >= 0 else {
                throw ParseError(line: lineNumber, message: "expected a GPU index, got \"\(columns[0])\"")
            }
            var memoryText = columns[3]
            if memoryText.hasSuffix("MiB") { memoryText = memoryText.dropLast(3).trimming(" ") }
            guard let mebibytes = Int64(memoryText), mebibytes > 0 else {
                throw ParseError(line: lineNumber, message: "expected memory.total in MiB, got \"\(columns[3])\"")
            }
            guard !columns[2].isEmpty else { throw ParseError(line: lineNumber, message: "expected a GPU name") }
            guard !gpus.contains(where: { $0.index == index }) else {
                throw ParseError(line: lineNumber, message: "GPU index \(index) listed twice")
            }
            gpus.append(GPU(index: index, uuid: columns[1], model: columns[2], memoryBytes: mebibytes << 20))
        }
        return gpus
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
