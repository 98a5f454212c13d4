/// The order in which a pass considers queued jobs: the partner furthest below its entitlement first; within it,
/// the project furthest below its share; within the project, the job's priority, then submission.
///
/// Standings move as the pass places jobs (``record(_:holding:)``), so one pass interleaves partners rather than
/// giving everything free to whoever was furthest behind when it began. Each step costs O(log partners + log
/// projects of the partner).
public struct FairShareQueue: Sendable {
    private let jobs: [PendingJob]
    private let capacity: ShareVector
    private(set) public var partners: [Int64: ShareStanding]
    private(set) public var projects: [Int64: ShareStanding]
    /// Job indices per project, in the given order; `cursor` is the next one.
    private var projectJobs: [Int64: (indices: [Int], cursor: Int)] = [:]
    private var projectHeaps: [Int64: Heap<Key>] = [:]
    private var partnerHeap = Heap<Key>()
    private var current: (partner: Int64, project: Int64)?

    struct Key: Comparable, Sendable {
        var ratio: Double
        var priority: Int
        var jobID: Int64
        var owner: Int64

        static func < (a: Key, b: Key) -> Bool {
            if a.ratio != b.ratio { return a.ratio < b.ratio }
            if a.priority != b.priority { return a.priority > b.priority }
            return a.jobID < b.jobID
        }
    }

    /// - Parameters:
    ///   - jobs: each project's jobs in the order they run within it (priority, then submission).
    ///   - partners, projects: standings; a missing one counts as entitled to nothing and holding nothing.
    ///   - capacity: the pools' sizes, to turn what is held into fractions.
    public init(jobs: [PendingJob], partners: [Int64: ShareStanding], projects: [Int64: ShareStanding], capacity: ShareVector) {
        self.jobs = jobs
        self.capacity = capacity
        self.partners = partners
        self.projects = projects
        var projectPartner: [Int64: Int64] = [:]
        for (index, job) in jobs.enumerated() {
            projectJobs[job.projectID, default: ([], 0)].indices.append(index)
            projectPartner[job.projectID] = job.partnerID
        }
        for (project, partner) in projectPartner {
            projectHeaps[partner, default: Heap()].push(projectKey(project))
        }
        for partner in projectHeaps.keys { partnerHeap.push(partnerKey(partner)) }
    }

    private func head(of project: Int64) -> PendingJob {
        let entry = projectJobs[project]!
        return jobs[entry.indices[entry.cursor]]
    }

    private func projectKey(_ project: Int64) -> Key {
        let job = head(of: project)
        let ratio = (projects[project] ?? ShareStanding(entitled: .zero)).ratio(capacity: capacity)
        return Key(ratio: ratio, priority: job.priority, jobID: job.id, owner: project)
    }

    private func partnerKey(_ partner: Int64) -> Key {
        let best = projectHeaps[partner]!.top!
        let ratio = (partners[partner] ?? ShareStanding(entitled: .zero)).ratio(capacity: capacity)
        return Key(ratio: ratio, priority: best.priority, jobID: best.jobID, owner: partner)
    }

    /// The index (into `jobs`) of the next job to consider, or `nil` when every job was considered. Call
    /// ``record(_:holding:)`` before asking again.
    public mutating func next() -> Int? {
        precondition(current == nil, "record the previous job first")
        guard let partner = partnerHeap.pop()?.owner, let project = projectHeaps[partner]?.pop()?.owner else { return nil }
        let index = projectJobs[project]!.indices[projectJobs[project]!.cursor]
        projectJobs[project]!.cursor += 1
        current = (partner, project)
        return index
    }

    /// What became of the job `next()` gave: `holding` is what it now holds if it was placed, `nil` if not.
    public mutating func record(_ index: Int, holding: ShareVector?) {
        guard let (partner, project) = current else { return }
        current = nil
        if let holding {
            partners[partner, default: ShareStanding(entitled: .zero)].allocated += holding
            projects[project, default: ShareStanding(entitled: .zero)].allocated += holding
        }
        let entry = projectJobs[project]!
        if entry.cursor < entry.indices.count { projectHeaps[partner]!.push(projectKey(project)) }
        if projectHeaps[partner]!.top != nil { partnerHeap.push(partnerKey(partner)) }
    }
}

/// A binary min-heap.
struct Heap<Element: Comparable & Sendable>: Sendable {
    private var items: [Element] = []

    var top: Element? { items.first }
    var count: Int { items.count }

    mutating func push(_ element: Element) {
        items.append(element)
        var child = items.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard items[child] < items[parent] else { break }
            items.swapAt(child, parent)
            child = parent
        }
    }

    mutating func pop() -> Element? {
        guard !items.isEmpty else { return nil }
        items.swapAt(0, items.count - 1)
        let popped = items.removeLast()
        var parent = 0
        while true {
            let left = 2 * parent + 1
            let right = left + 1
            var smallest = parent
            if left < items.count, items[left] < items[smallest] { smallest = left }
            if right < items.count, items[right] < items[smallest] { smallest = right }
            if smallest == parent { break }
            items.swapAt(parent, smallest)
            parent = smallest
        }
        return popped
    }
}
