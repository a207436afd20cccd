//! Audit panel selection: weighted random choice without replacement, driven by the workflow's
//! seeded random source so a replay picks the same panel. Each draw prefers validators whose model
//! family is not on the panel yet; only when every remaining one shares a family already chosen
//! does the draw take from all of them. A validator without a family counts as a family of its own,
//! so panels drawn before families were recorded are drawn exactly as they were.

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
    let mut chosen: Vec<ValidatorRef> = Vec::new();
    while chosen.len() < size && !pool.is_empty() {
        let new_family = |v: &&ValidatorRef| match &v.model_family {
            None => true,
            Some(f) => !chosen.iter().any(|c| c.model_family.as_ref() == Some(f)),
        };
        let preferred: Vec<usize> = (0..pool.len()).filter(|&i| new_family(&pool[i])).collect();
        let draw_from: Vec<usize> = if preferred.is_empty() {
            (0..pool.len()).collect()
        } else {
            preferred
        };
        let total: f64 = draw_from.iter().map(|&i| pool[i].weight).sum();
        let mut target = next_unit() * total;
        let mut index = *draw_from.last().expect("a non-empty pool");
        for &i in &draw_from {
            if target < pool[i].weight {
                index = i;
                break;
            }
            target -= pool[i].weight;
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
            model_family: None,
        }
    }

    fn f(id: &str, family: &str) -> ValidatorRef {
        ValidatorRef {
            model_family: Some(family.into()),
            ..v(id, 1.0)
        }
    }

    #[test]
    fn different_families_are_preferred_while_there_are_any() {
        // Three llama validators and one qwen: a panel of two always mixes them.
        let all = [
            f("a", "llama"),
            f("b", "llama"),
            f("c", "llama"),
            f("d", "qwen"),
        ];
        for first in [0.0, 0.3, 0.6, 0.99] {
            for second in [0.0, 0.5, 0.99] {
                let mut seq = [first, second].into_iter();
                let panel = select(&all, 2, &[], || seq.next().unwrap());
                let families: Vec<_> = panel
                    .iter()
                    .map(|v| v.model_family.clone().unwrap())
                    .collect();
                assert!(
                    families.contains(&"llama".into()) && families.contains(&"qwen".into()),
                    "{families:?}"
                );
            }
        }
        // Once every family is used, the rest of the pool is drawn from.
        let mut seq = [0.0, 0.0, 0.0].into_iter();
        assert_eq!(select(&all, 3, &[], || seq.next().unwrap()).len(), 3);
    }

    #[test]
    fn the_same_draws_give_the_same_panel() {
        let all = [
            f("a", "llama"),
            f("b", "qwen"),
            v("c", 2.0),
            f("d", "qwen"),
            v("e", 0.5),
        ];
        let draws = [0.42, 0.17, 0.93];
        let run = || {
            let mut seq = draws.into_iter();
            select(&all, 3, &[], || seq.next().unwrap())
        };
        assert_eq!(run(), run());
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
