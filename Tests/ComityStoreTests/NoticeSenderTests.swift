import ComityAPI
import Foundation
import PostgresNIO
import Synchronization
import Testing

@testable import ComityStore

@Suite("Notifications sent after the commit, batched", .enabled(if: TestDatabase.isAvailable, "needs COMITY_TEST_PG_URL (run ops/test)"))
struct NoticeSenderTests {
    let logger = TestDatabase.logger

    @Test("every notice of many concurrent senders reaches a listener and the process at once; the pool's connection keeps synchronous commits")
    func concurrentSendsAllArrive() async throws {
        try await TestDatabase.withDatabase(migrate: false) { _, database in
            // One connection: the notices and the check of its setting afterwards run on the same one.
            try await PostgresClient.with(try database.clientConfiguration(maxConnections: 1), logger: logger) { client in
            // The test cluster runs without synchronous commits: turn them on for this session, as in production.
            try await client.query("set synchronous_commit = on", logger: logger)
            let local = Mutex<[String]>([])
            let sender = NoticeSender(client: client, logger: logger) { notice in local.withLock { $0.append(notice.payload) } }
            let expected = Set((0..<60).map { "n\($0)" })
            let received = try await PostgresClient.with(try database.clientConfiguration(maxConnections: 1), logger: logger) { listener in
                try await listener.withConnection { connection in
                    let (listening, ready) = AsyncStream.makeStream(of: Void.self)
                    return try await withThrowingTaskGroup(of: Set<String>?.self) { group in
                        group.addTask {
                            var seen = Set<String>()
                            try await connection.listen(on: "comity_test") { notifications in
                                ready.yield()
                                for try await notification in notifications {
                                    // Tagged with the sender's origin: another server's listener strips the tag,
                                    // the sender's own server skips it (it delivered the notice already).
                                    #expect(NoticeSender.received(notification.payload, skipping: sender.origin) == nil)
                                    seen.insert(try #require(NoticeSender.received(notification.payload, skipping: "another-server")))
                                    if seen == expected { break }
                                }
                            }
                            return seen
                        }
                        group.addTask {
                            // A deadline, not a sleep: the listener normally finishes long before.
                            try await Task.sleep(for: .seconds(30))
                            return nil
                        }
                        for await _ in listening { break }
                        // 60 senders at once; those arriving while a batch is out share the next one.
                        try await withThrowingTaskGroup(of: Void.self) { senders in
                            for payload in expected.sorted() {
                                senders.addTask { await sender.send([.init("comity_test", payload), .init("comity_test", payload)]) }
                            }
                            try await senders.waitForAll()
                        }
                        let first = try await group.next() ?? nil
                        group.cancelAll()
                        return first ?? []
                    }
                }
            }
            #expect(received == expected)
            #expect(Set(local.withLock { $0 }) == expected)
            // The notifications were sent without waiting for a flush, and that setting stayed in their own statement.
            let setting = try await client.query("show synchronous_commit", logger: logger).decode(String.self).collect()
            #expect(setting == ["on"])
            }
        }
    }
}

@Suite("Notification payloads and their sender's tag")
struct NoticeTagTests {
    @Test("untagged payloads pass as they are; a tagged one is stripped for others and skipped by its sender")
    func tags() {
        #expect(NoticeSender.received("12,13", skipping: "abc") == "12,13")
        #expect(NoticeSender.received("", skipping: nil) == "")
        #expect(NoticeSender.received("@abc:12,13", skipping: "abc") == nil)
        #expect(NoticeSender.received("@abc:12,13", skipping: "xyz") == "12,13")
        #expect(NoticeSender.received("@abc:", skipping: nil) == "")
    }
}

@Suite("Heartbeats commit without waiting for the flush", .enabled(if: TestDatabase.isAvailable, "needs COMITY_TEST_PG_URL (run ops/test)"))
struct HeartbeatCommitTests {
    let logger = TestDatabase.logger

    @Test("a heartbeat moves the host's liveness and leaves its connection with synchronous commits on")
    func settingStaysInItsStatement() async throws {
        try await TestDatabase.withDatabase { _, database in
            // One connection: the heartbeat and the check of the setting afterwards run on the same one.
            try await PostgresClient.with(try database.clientConfiguration(maxConnections: 1), logger: logger) { client in
                try await client.query("set synchronous_commit = on", logger: logger)
                let seed = try await TestDatabase.seeded(client)
                let host = try await seed.enroll("h")
                try await client.query("update hosts set last_heartbeat = now() - interval '1 hour' where id = \(host.host)", logger: logger)
                _ = try await seed.store.heartbeat(host: host.host, HeartbeatRequest(attempts: []))
                #expect(try await client.number("select count(*) from hosts where id = \(host.host) and last_heartbeat > now() - interval '1 minute'") == 1)
                let setting = try await client.query("show synchronous_commit", logger: logger).decode(String.self).collect()
                #expect(setting == ["on"])
            }
        }
    }
}
