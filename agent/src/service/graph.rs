//! Dependency ordering of units, with deterministic cycle breaking.

use std::collections::{BTreeMap, BTreeSet};

/// An ordering edge dropped to break a cycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokenCycle {
    /// The cycle as found, first unit repeated at the end.
    pub cycle: Vec<String>,
    /// The unit whose ordering was dropped ...
    pub unit: String,
    /// ... after this one.
    pub dropped_after: String,
}

impl std::fmt::Display for BrokenCycle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "dependency cycle {}; starting {} without waiting for {}",
            self.cycle.join(" -> "),
            self.unit,
            self.dropped_after
        )
    }
}

/// A start order, and the edges that remain after cycle breaking.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StartPlan {
    /// Units in start order (dependencies first).
    pub order: Vec<String>,
    /// For each unit, the units it waits for.
    pub after: BTreeMap<String, BTreeSet<String>>,
    pub broken: Vec<BrokenCycle>,
}

/// Order `units` (name -> units it is ordered after). Edges to unknown units
/// are ignored. Ties break by name; when only cycles remain, the smallest
/// name in a cycle loses its ordering edge on the previous unit of the cycle.
pub fn plan(units: &BTreeMap<String, BTreeSet<String>>) -> StartPlan {
    let mut after: BTreeMap<String, BTreeSet<String>> = units
        .iter()
        .map(|(name, deps)| {
            let deps = deps
                .iter()
                .filter(|d| units.contains_key(*d) && *d != name)
                .cloned()
                .collect();
            (name.clone(), deps)
        })
        .collect();
    let mut order = Vec::new();
    let mut broken = Vec::new();
    let mut done: BTreeSet<String> = BTreeSet::new();
    while done.len() < after.len() {
        let next = after
            .iter()
            .find(|(name, deps)| !done.contains(*name) && deps.iter().all(|d| done.contains(d)))
            .map(|(name, _)| name.clone());
        if let Some(name) = next {
            done.insert(name.clone());
            order.push(name);
            continue;
        }
        // Only cycles remain among the units not done yet.
        let remaining: BTreeSet<&String> = after.keys().filter(|n| !done.contains(*n)).collect();
        let cycle = remaining
            .iter()
            .find_map(|start| find_cycle(start, &after, &done))
            .expect("a graph with no startable unit has a cycle");
        // Rotate so the smallest name comes first, then drop its edge to the
        // unit before it in the cycle.
        let smallest = cycle.iter().min().expect("cycle is not empty").clone();
        let pos = cycle.iter().position(|n| *n == smallest).unwrap_or(0);
        let mut rotated: Vec<String> = cycle[pos..].iter().chain(&cycle[..pos]).cloned().collect();
        // The cycle is in "waits for" direction: rotated[i] waits for rotated[i+1].
        let dropped_after = rotated.get(1).cloned().unwrap_or_else(|| smallest.clone());
        rotated.push(smallest.clone());
        if let Some(deps) = after.get_mut(&smallest) {
            deps.remove(&dropped_after);
        }
        broken.push(BrokenCycle {
            cycle: rotated,
            unit: smallest,
            dropped_after,
        });
    }
    StartPlan {
        order,
        after,
        broken,
    }
}

/// A cycle reachable from `start` following "waits for" edges, as the list
/// of units on it (no repetition).
fn find_cycle(
    start: &str,
    after: &BTreeMap<String, BTreeSet<String>>,
    done: &BTreeSet<String>,
) -> Option<Vec<String>> {
    let mut path: Vec<String> = vec![start.to_string()];
    let mut visited: BTreeSet<String> = BTreeSet::new();
    loop {
        let current = path.last()?.clone();
        visited.insert(current.clone());
        let next = after
            .get(&current)?
            .iter()
            .find(|d| !done.contains(*d))?
            .clone();
        if let Some(pos) = path.iter().position(|n| *n == next) {
            return Some(path[pos..].to_vec());
        }
        if visited.contains(&next) {
            return None;
        }
        path.push(next);
    }
}

/// Stop order for shutdown: reverse of the start order.
pub fn stop_order(plan: &StartPlan) -> Vec<String> {
    plan.order.iter().rev().cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(edges: &[(&str, &[&str])]) -> BTreeMap<String, BTreeSet<String>> {
        edges
            .iter()
            .map(|(n, deps)| (n.to_string(), deps.iter().map(|d| d.to_string()).collect()))
            .collect()
    }

    #[test]
    fn dependencies_come_first_and_ties_break_by_name() {
        let plan = plan(&graph(&[
            ("sshd", &["keygen", "network"]),
            ("network", &[]),
            ("keygen", &[]),
            ("chrony", &["network", "not-installed"]),
        ]));
        assert_eq!(plan.order, vec!["keygen", "network", "chrony", "sshd"]);
        assert!(plan.broken.is_empty());
        assert_eq!(plan.after["chrony"].len(), 1);
        assert_eq!(
            stop_order(&plan),
            vec!["sshd", "chrony", "network", "keygen"]
        );
    }

    #[test]
    fn cycles_are_broken_the_same_way_every_time() {
        let g = graph(&[
            ("c", &["a"]),
            ("a", &["b"]),
            ("b", &["c"]),
            ("d", &["c"]),
            ("e", &[]),
        ]);
        let first = plan(&g);
        assert_eq!(first.broken.len(), 1);
        let broken = &first.broken[0];
        assert_eq!(broken.unit, "a");
        assert_eq!(broken.dropped_after, "b");
        assert_eq!(broken.cycle, vec!["a", "b", "c", "a"]);
        assert_eq!(
            broken.to_string(),
            "dependency cycle a -> b -> c -> a; starting a without waiting for b"
        );
        // a starts first within the cycle; then c (after a), then b (after c).
        assert_eq!(first.order, vec!["e", "a", "c", "b", "d"]);
        for _ in 0..5 {
            assert_eq!(plan(&g), first);
        }
    }

    #[test]
    fn two_unit_cycle() {
        let p = plan(&graph(&[("x", &["y"]), ("y", &["x"])]));
        assert_eq!(p.order, vec!["x", "y"]);
        assert_eq!(p.broken[0].cycle, vec!["x", "y", "x"]);
    }
}
