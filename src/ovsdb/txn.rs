//! Write transactions (SPEC §6 Switch1), built as native OVSDB `transact` operations.
