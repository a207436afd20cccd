//! Audit panel selection: weighted random choice without replacement, driven by the workflow's
//! seeded random source so a replay picks the same panel.

use sigma_activities::types::ValidatorRef;

/// Picks up to `size` validators not in `exclude`, each draw proportional to weight.
/// `next_unit` yields uniform numbers in [0, 1).
pub fn select(
    candidates: &[ValidatorRef],
    size: usize,
    exclude: &[String],
    mut next_unit: impl FnMut() -> f64,
) -> Vec<ValidatorRef> {
    let mut pool: Vec<&ValidatorRef> = candidates
        .iter()
        .filter(|v| !exclude.contains(&v.validator_id) && v.weight > 0.0)
        .collect();
    let mut chosen = Vec::new();
    while chosen.len() < size && !pool.is_empty() {
        let total: f64 = pool.iter().map(|v| v.weight).sum();
        let mut target = next_unit() * total;
        let mut index = pool.len() - 1;
        for (i, v) in pool.iter().enumerate() {
            if target < v.weight {
                index = i;
                break;
            }
            target -= v.weight;
        }
        chosen.push(pool.remove(index).clone());
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(id: &str, weight: f64) -> ValidatorRef {
        ValidatorRef {
            validator_id: id.into(),
            model: format!("m-{id}"),
            weight,
        }
    }

    #[test]
    fn disjoint_from_exclusions_and_never_repeats() {
        let all = [v("a", 1.0), v("b", 1.0), v("c", 1.0), v("d", 1.0)];
        let mut seq = [0.9, 0.9, 0.9].into_iter();
        let first = select(&all, 3, &[], || seq.next().unwrap());
        assert_eq!(first.len(), 3);
        let ids: Vec<String> = first.iter().map(|v| v.validator_id.clone()).collect();
        let second = select(&all, 3, &ids, || 0.0);
        assert_eq!(second.len(), 1, "only one validator is left for phase 2");
        assert!(!ids.contains(&second[0].validator_id));
    }

    #[test]
    fn weight_drives_the_draw() {
        let all = [v("light", 1.0), v("heavy", 9.0)];
        assert_eq!(select(&all, 1, &[], || 0.05)[0].validator_id, "light");
        assert_eq!(select(&all, 1, &[], || 0.5)[0].validator_id, "heavy");
        assert!(select(&[v("zero", 0.0)], 1, &[], || 0.1).is_empty());
    }
}
