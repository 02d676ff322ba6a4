//! Compact sorted collections for column values. Most columns hold zero or one value; a
//! one-element `BTreeSet` costs a node of several hundred bytes where a vector costs one
//! atom, which at 20,000 rows of 40 columns is most of the relay's memory.

use super::datum::Atom;

/// A set of atoms, kept sorted and without duplicates.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct AtomSet(Vec<Atom>);

impl AtomSet {
    pub const fn new() -> Self {
        Self(Vec::new())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Atom> {
        self.0.iter()
    }

    pub fn first(&self) -> Option<&Atom> {
        self.0.first()
    }

    /// Adds `atom`; false when it was already there.
    pub fn insert(&mut self, atom: Atom) -> bool {
        match self.0.binary_search(&atom) {
            Ok(_) => false,
            Err(at) => {
                self.0.insert(at, atom);
                true
            }
        }
    }

    /// Removes `atom`; false when it was not there.
    pub fn remove(&mut self, atom: &Atom) -> bool {
        match self.0.binary_search(atom) {
            Ok(at) => {
                self.0.remove(at);
                true
            }
            Err(_) => false,
        }
    }

    pub fn contains(&self, atom: &Atom) -> bool {
        self.0.binary_search(atom).is_ok()
    }

    /// The atoms in exactly one of the two sets.
    pub fn symmetric_difference<'a>(&'a self, other: &'a Self) -> impl Iterator<Item = &'a Atom> {
        self.iter()
            .filter(|a| !other.contains(a))
            .chain(other.iter().filter(|a| !self.contains(a)))
    }
}

impl FromIterator<Atom> for AtomSet {
    fn from_iter<I: IntoIterator<Item = Atom>>(iter: I) -> Self {
        let mut atoms: Vec<Atom> = iter.into_iter().collect();
        atoms.sort();
        atoms.dedup();
        Self(atoms)
    }
}

impl<const N: usize> From<[Atom; N]> for AtomSet {
    fn from(atoms: [Atom; N]) -> Self {
        atoms.into_iter().collect()
    }
}

impl IntoIterator for AtomSet {
    type Item = Atom;
    type IntoIter = std::vec::IntoIter<Atom>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a AtomSet {
    type Item = &'a Atom;
    type IntoIter = std::slice::Iter<'a, Atom>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// A map from atoms to atoms, kept sorted by key.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct AtomMap(Vec<(Atom, Atom)>);

impl AtomMap {
    pub const fn new() -> Self {
        Self(Vec::new())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Atom, &Atom)> {
        self.0.iter().map(|(k, v)| (k, v))
    }

    pub fn values(&self) -> impl Iterator<Item = &Atom> {
        self.0.iter().map(|(_, v)| v)
    }

    fn position(&self, key: &Atom) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| k.cmp(key))
    }

    pub fn get(&self, key: &Atom) -> Option<&Atom> {
        self.position(key).ok().map(|at| &self.0[at].1)
    }

    pub fn contains_key(&self, key: &Atom) -> bool {
        self.position(key).is_ok()
    }

    /// Sets `key` to `value`, returning the previous value.
    pub fn insert(&mut self, key: Atom, value: Atom) -> Option<Atom> {
        match self.position(&key) {
            Ok(at) => Some(std::mem::replace(&mut self.0[at].1, value)),
            Err(at) => {
                self.0.insert(at, (key, value));
                None
            }
        }
    }

    pub fn remove(&mut self, key: &Atom) -> Option<Atom> {
        self.position(key).ok().map(|at| self.0.remove(at).1)
    }

    pub fn retain(&mut self, mut keep: impl FnMut(&Atom, &Atom) -> bool) {
        self.0.retain(|(k, v)| keep(k, v));
    }
}

impl FromIterator<(Atom, Atom)> for AtomMap {
    /// Later pairs win over earlier ones with the same key, as in a `BTreeMap`.
    fn from_iter<I: IntoIterator<Item = (Atom, Atom)>>(iter: I) -> Self {
        let mut map = Self::new();
        for (k, v) in iter {
            map.insert(k, v);
        }
        map
    }
}

impl<const N: usize> From<[(Atom, Atom); N]> for AtomMap {
    fn from(pairs: [(Atom, Atom); N]) -> Self {
        pairs.into_iter().collect()
    }
}

impl IntoIterator for AtomMap {
    type Item = (Atom, Atom);
    type IntoIter = std::vec::IntoIter<(Atom, Atom)>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int(i: i64) -> Atom {
        Atom::Integer(i)
    }

    #[test]
    fn sets_stay_sorted_and_unique() {
        let mut set: AtomSet = [int(3), int(1), int(3)].into();
        assert_eq!(set.iter().cloned().collect::<Vec<_>>(), [int(1), int(3)]);
        assert!(set.insert(int(2)));
        assert!(!set.insert(int(2)));
        assert!(set.remove(&int(1)));
        assert!(!set.remove(&int(1)));
        assert_eq!(set.first(), Some(&int(2)));
        let other: AtomSet = [int(3), int(4)].into();
        let mut diff: Vec<_> = set.symmetric_difference(&other).cloned().collect();
        diff.sort();
        assert_eq!(diff, [int(2), int(4)]);
    }

    #[test]
    fn maps_keep_one_value_per_key() {
        let mut map: AtomMap = [(int(2), int(20)), (int(1), int(10)), (int(2), int(21))].into();
        assert_eq!(map.len(), 2);
        assert_eq!(map.get(&int(2)), Some(&int(21)));
        assert_eq!(map.insert(int(1), int(11)), Some(int(10)));
        assert_eq!(map.remove(&int(1)), Some(int(11)));
        assert!(!map.contains_key(&int(1)));
        map.retain(|_, v| *v != int(21));
        assert!(map.is_empty());
    }
}
