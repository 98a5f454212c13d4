import ArgumentParser
import ComityAPI
import ComityClient
import ComityCore

/// `comity logs ID [--follow]`.
struct LogsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "logs",
        abstract: "Print a job's output (its stdout to standard output, its stderr to standard error).",
        discussion: """
            With --follow, waits for more output until the job ends.

            With --output json, prints the log page (chunks with seq, attempt, stream, data, at) as JSON; \
            with --follow, one JSON object per chunk and line (JSON Lines).
            """
    )

    /// How long one follow request may be held by the server.
    static let waitSeconds = 20

    @Argument(help: ArgumentHelp("The job id.", valueName: "id"))
    var id: Int64

    @Flag(name: [.short, .long], help: "Keep printing new output until the job ends.")
    var follow = false

    @OptionGroup(title: "Global Options")
    var global: GlobalOptions

    func run() async throws {
        let client = try global.client()
        if follow {
            try await followLogs(client)
        } else {
            try await printAll(client)
        }
    }

    /// Fetches every page there is now and prints it.
    private func printAll(_ client: ComityClient) async throws {
        var chunks: [LogChunk] = []
        var after: Int64 = 0
        var page: LogPage
        repeat {
            page = try await client.logs(id, after: after)
            chunks += page.chunks
            guard page.next > after else { break }
            after = page.next
        } while !page.chunks.isEmpty && !page.complete
        if global.isJSON {
            let all = LogPage(
                chunks: chunks,
                next: after,
                complete: page.complete,
                truncated: page.truncated,
                state: page.state
            )
            return try Terminal.json(all)
        }
        chunks.forEach(write)
        if page.truncated { noteTruncated() }
    }

    /// Long-polls for new chunks until the job is terminal and everything was printed.
    private func followLogs(_ client: ComityClient) async throws {
        var next: Int64 = 0
        var notedTruncation = false
        var emptyPagesOfEndedJob = 0
        while true {
            let after = next
            let page = try await Reconnect.retrying {
                try await client.logs(id, after: after, waitSeconds: Self.waitSeconds)
            }
            for chunk in page.chunks {
                if global.isJSON {
                    try Terminal.jsonLine(chunk)
                } else {
                    write(chunk)
                }
            }
            next = max(next, page.next)
            if page.truncated, !notedTruncation {
                notedTruncation = true
                noteTruncated()
            }
            // `complete` is the server's word that the job ended and nothing is left. Should a server not say so,
            // two empty pages of an ended job, a second apart, mean the same (and keep this from spinning).
            if page.complete { break }
            if page.state.isTerminal && page.chunks.isEmpty {
                emptyPagesOfEndedJob += 1
                if emptyPagesOfEndedJob >= 2 { break }
                try await Task.sleep(for: .seconds(1))
            } else {
                emptyPagesOfEndedJob = 0
            }
        }
    }

    private func write(_ chunk: LogChunk) {
        switch chunk.stream {
        case .stdout: Terminal.outRaw(chunk.data)
        case .stderr: Terminal.errRaw(chunk.data)
        }
    }

    private func noteTruncated() {
        Terminal.err("note: job \(id)'s log reached its size limit; later output was dropped")
    }
}
