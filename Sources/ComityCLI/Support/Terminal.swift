import ComityAPI
import Foundation

/// Unbuffered writes to standard output and standard error, so that progress lines, log chunks and errors
/// interleave in the order they happen, even when output is piped.
enum Terminal {
    /// Writes `line` and a newline to standard output.
    static func out(_ line: String) { write(line + "\n", to: .standardOutput) }

    /// Writes `text` as is to standard output (log chunks carry their own newlines).
    static func outRaw(_ text: String) { write(text, to: .standardOutput) }

    /// Writes `line` and a newline to standard error.
    static func err(_ line: String) { write(line + "\n", to: .standardError) }

    /// Writes `text` as is to standard error.
    static func errRaw(_ text: String) { write(text, to: .standardError) }

    /// Prints an API object as pretty JSON with sorted keys, in the wire's snake_case and date conventions.
    static func json(_ value: some Encodable) throws {
        let encoder = WireJSON.encoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        out(String(decoding: try encoder.encode(value), as: UTF8.self))
    }

    /// Prints an API object as one line of JSON (JSON Lines, for streams such as `logs --follow`).
    static func jsonLine(_ value: some Encodable) throws {
        let encoder = WireJSON.encoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        out(String(decoding: try encoder.encode(value), as: UTF8.self))
    }

    private enum Stream { case standardOutput, standardError }

    private static func write(_ text: String, to stream: Stream) {
        guard !text.isEmpty else { return }
        let handle: FileHandle = stream == .standardOutput ? .standardOutput : .standardError
        // A closed pipe (`comity jobs | head`) is not an error worth a crash: the output is simply not wanted.
        do {
            try handle.write(contentsOf: Data(text.utf8))
        } catch {
            exit(0)
        }
    }
}
