import ComityAPI
import ComityAgent
import Synchronization
import Testing

/// Chunks a sink received.
final class ChunkCollector: Sendable {
    private let storage = Mutex<[LogAppend]>([])

    func append(_ chunk: LogAppend) { storage.withLock { $0.append(chunk) } }
    var chunks: [LogAppend] { storage.withLock { $0 } }
}

@Suite("Log batching")
struct LogBatcherTests {
    @Test("UTF-8: an incomplete trailing character is held back")
    func completePrefix() {
        let text = Array("añ€😀".utf8)  // 1 + 2 + 3 + 4 bytes
        #expect(UTF8Chunking.completePrefixLength(text) == text.count)
        #expect(UTF8Chunking.completePrefixLength(Array(text.dropLast())) == 6)
        #expect(UTF8Chunking.completePrefixLength(Array(text.dropLast(3))) == 6)
        #expect(UTF8Chunking.completePrefixLength(Array(text.prefix(5))) == 3)
        #expect(UTF8Chunking.completePrefixLength(Array(text.prefix(2))) == 1)
        #expect(UTF8Chunking.completePrefixLength([]) == 0)
        // Bytes that are not UTF-8 at all are passed on, not held forever.
        #expect(UTF8Chunking.completePrefixLength([0xFF, 0xFE]) == 2)
    }

    @Test("UTF-8: pieces never split a character")
    func split() {
        let text = Array(String(repeating: "€", count: 10).utf8)  // 30 bytes
        let pieces = UTF8Chunking.split(text, maxBytes: 8)
        #expect(pieces.allSatisfy { $0.count <= 8 && String(validating: $0, as: UTF8.self) != nil })
        #expect(pieces.flatMap { $0 } == text)
        #expect(UTF8Chunking.split(Array("abc".utf8), maxBytes: 32).map(Array.init) == [Array("abc".utf8)])
    }

    @Test("chunks are numbered from 1, in order, at most flushBytes each")
    func numbering() async {
        var configuration = LogBatcher.Configuration()
        configuration.flushBytes = 16
        configuration.flushInterval = .milliseconds(10)
        let batcher = LogBatcher(configuration: configuration)
        let received = ChunkCollector()
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await batcher.run { chunk in received.append(chunk) } }
            batcher.append(.stdout, Array("0123456789abcdefghij\n".utf8))
            batcher.append(.stderr, Array("warning: ".utf8))
            batcher.append(.stderr, Array("x😀".utf8).dropLast(1).map { $0 })
            batcher.append(.stderr, [Array("😀".utf8).last!])
            batcher.append(.stdout, Array("done\n".utf8))
            batcher.finish()
        }
        let chunks = received.chunks
        #expect(chunks.map(\.seq) == Array(1...Int64(chunks.count)))
        #expect(chunks.allSatisfy { $0.data.utf8.count <= 16 })
        #expect(chunks.filter { $0.stream == .stdout }.map(\.data).joined() == "0123456789abcdefghij\ndone\n")
        #expect(chunks.filter { $0.stream == .stderr }.map(\.data).joined() == "warning: x😀")
    }

    @Test("output beyond the pending limit is dropped and said so")
    func dropping() async {
        var configuration = LogBatcher.Configuration()
        configuration.maxPendingBytes = 10
        let batcher = LogBatcher(configuration: configuration)
        batcher.append(.stdout, Array("12345678".utf8))
        batcher.append(.stdout, Array("too much".utf8))
        batcher.finish()
        let received = ChunkCollector()
        await batcher.run { chunk in received.append(chunk) }
        let chunks = received.chunks
        #expect(
            chunks.map(\.data) == [
                "12345678", "[comity-agent: 8 bytes of output dropped while the server was not keeping up]\n",
            ]
        )
        #expect(chunks.map(\.stream) == [.stdout, .stderr])
    }
}
