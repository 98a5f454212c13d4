import ComityAPI
import Synchronization

/// Collects a job's stdout and stderr and hands them to a sink in numbered chunks.
///
/// Chunks go out when a stream has `flushBytes` pending or every `flushInterval`, whichever comes first, one at a
/// time and in order, numbered from 1 (the `seq` the server uses to store each chunk once). A chunk never splits a
/// UTF-8 character: an incomplete trailing sequence waits for the rest of its bytes (or for ``finish()``).
///
/// Appending never waits for the network: a job must not stall on its own output while the server is unreachable.
/// Instead, output beyond `maxPendingBytes` not yet sent is dropped, and a line on stderr says how much.
package final class LogBatcher: Sendable {
    package struct Configuration: Sendable {
        /// Largest chunk, and the pending size that triggers a flush.
        package var flushBytes = 32 * 1024
        /// Longest time output waits before it is sent.
        package var flushInterval: Duration = .milliseconds(250)
        /// Output held while the sink is slow; more than this is dropped.
        package var maxPendingBytes = 8 << 20

        package init() {}
    }

    struct Segment: Sendable {
        var stream: LogStream
        var bytes: [UInt8]
    }

    struct State: Sendable {
        var segments: [Segment] = []
        var pendingBytes = 0
        var droppedBytes = 0
        var isFinished = false
        var nextSeq: Int64 = 1
    }

    let configuration: Configuration
    private let state = Mutex(State())
    private let wake: AsyncStream<Void>
    private let wakeContinuation: AsyncStream<Void>.Continuation

    package init(configuration: Configuration = Configuration()) {
        self.configuration = configuration
        (wake, wakeContinuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    /// Adds output of one stream; ignored after ``finish()``.
    package func append(_ stream: LogStream, _ bytes: [UInt8]) {
        guard !bytes.isEmpty else { return }
        let isFull = state.withLock { state -> Bool in
            guard !state.isFinished else { return false }
            guard state.pendingBytes + bytes.count <= configuration.maxPendingBytes else {
                state.droppedBytes += bytes.count
                return true
            }
            if let last = state.segments.indices.last, state.segments[last].stream == stream {
                state.segments[last].bytes += bytes
            } else {
                state.segments.append(Segment(stream: stream, bytes: bytes))
            }
            state.pendingBytes += bytes.count
            return state.pendingBytes >= configuration.flushBytes
        }
        if isFull { wakeContinuation.yield() }
    }

    /// Marks the end of output: ``run(sink:)`` sends what is left and returns.
    package func finish() {
        state.withLock { $0.isFinished = true }
        wakeContinuation.yield()
    }

    /// Sends chunks to `sink` until ``finish()`` was called and everything is sent.
    ///
    /// - Parameter sink: delivers one chunk; it is awaited before the next, so it may retry as long as it wants.
    package func run(sink: @escaping @Sendable (LogAppend) async -> Void) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask { [wakeContinuation, interval = configuration.flushInterval] in
                while true {
                    do { try await Task.sleep(for: interval) } catch { return }
                    wakeContinuation.yield()
                }
            }
            for await _ in wake {
                let (chunks, isDone) = state.withLock { state in
                    (Self.take(from: &state, flushBytes: configuration.flushBytes), state.isFinished)
                }
                for chunk in chunks { await sink(chunk) }
                if isDone { break }
            }
            group.cancelAll()
        }
    }

    /// Takes every chunk that is ready, numbering them; holds back a stream's incomplete trailing UTF-8 character
    /// unless the output has finished.
    static func take(from state: inout State, flushBytes: Int) -> [LogAppend] {
        var lastIndexOfStream: [LogStream: Int] = [:]
        for (index, segment) in state.segments.enumerated() { lastIndexOfStream[segment.stream] = index }
        var chunks: [LogAppend] = []
        var kept: [Segment] = []
        for (index, segment) in state.segments.enumerated() {
            var bytes = segment.bytes
            if !state.isFinished, lastIndexOfStream[segment.stream] == index {
                let complete = UTF8Chunking.completePrefixLength(bytes)
                if complete < bytes.count {
                    kept.append(Segment(stream: segment.stream, bytes: Array(bytes[complete...])))
                    bytes.removeLast(bytes.count - complete)
                }
            }
            for piece in UTF8Chunking.split(bytes, maxBytes: flushBytes) {
                chunks.append(
                    LogAppend(seq: state.nextSeq, stream: segment.stream, data: String(decoding: piece, as: UTF8.self))
                )
                state.nextSeq += 1
            }
        }
        if state.droppedBytes > 0 {
            let note =
                "[comity-agent: \(state.droppedBytes) bytes of output dropped while the server was not keeping up]\n"
            chunks.append(LogAppend(seq: state.nextSeq, stream: .stderr, data: note))
            state.nextSeq += 1
            state.droppedBytes = 0
        }
        state.segments = kept
        state.pendingBytes = kept.reduce(0) { $0 + $1.bytes.count }
        return chunks
    }
}

/// Cutting byte streams into pieces without splitting UTF-8 characters.
package enum UTF8Chunking {
    /// The length of the longest prefix that does not end inside an incomplete multi-byte character.
    package static func completePrefixLength(_ bytes: [UInt8]) -> Int {
        var index = bytes.count - 1
        let lowest = max(0, bytes.count - 4)
        while index >= lowest {
            let byte = bytes[index]
            if byte & 0b1100_0000 != 0b1000_0000 {
                let length: Int
                switch byte {
                case 0b1100_0000...0b1101_1111: length = 2
                case 0b1110_0000...0b1110_1111: length = 3
                case 0b1111_0000...0b1111_0111: length = 4
                default: length = 1
                }
                return index + length > bytes.count ? index : bytes.count
            }
            index -= 1
        }
        return bytes.count
    }

    /// Splits `bytes` into pieces of at most `maxBytes`, cutting before a continuation byte only when a piece holds
    /// nothing else.
    package static func split(_ bytes: [UInt8], maxBytes: Int) -> [ArraySlice<UInt8>] {
        var pieces: [ArraySlice<UInt8>] = []
        var start = 0
        while start < bytes.count {
            var end = min(start + maxBytes, bytes.count)
            if end < bytes.count {
                var cut = end
                while cut > start, bytes[cut] & 0b1100_0000 == 0b1000_0000 { cut -= 1 }
                if cut > start { end = cut }
            }
            pieces.append(bytes[start..<end])
            start = end
        }
        return pieces
    }
}
