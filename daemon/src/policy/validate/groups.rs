//! One `[[group]]` table: its id, name and allocations.

use toml::de::DeTable;

use super::checker::{Checker, Span};
use super::entries::AllocationDraft;
use crate::policy::Group;

const GROUP_KEYS: &[&str] = &["id", "name", "download", "upload"];

/// What survived validation of one `[[group]]` table.
pub(super) struct GroupDraft {
    /// The span of the table, where problems of the group as a whole go.
    pub(super) header: Span,
    /// The id when valid, with the span of its value.
    pub(super) id: Option<(String, Span)>,
    /// Whatever string was written as the id, valid or not, so an OPD that
    /// names a group with an invalid id is not also told the group is
    /// unknown.
    pub(super) label: Option<String>,
    /// Per direction, download first.
    pub(super) allocations: [AllocationDraft; 2],
    pub(super) group: Option<Group>,
}

impl Checker<'_> {
    /// One `[[group]]` table, with what the cross-checks need.
    pub(super) fn group(&mut self, table: &DeTable<'_>, header: &Span) -> GroupDraft {
        const PLACE: &str = "this [[group]]";
        self.unknown_keys(table, GROUP_KEYS, "in [[group]]");

        let mut label = None;
        let id = self
            .require(table, "id", header, PLACE, "\"kecamatan\"")
            .and_then(|value| {
                let id = self.string(value, "id", "\"kecamatan\"")?;
                label = Some(id.to_string());
                self.id(id, &value.span(), "group id")
                    .then(|| (id.to_string(), value.span()))
            });
        let name = self.name(
            table,
            header,
            PLACE,
            "\"Kantor Kecamatan\"",
            "the group's name, e.g. \"Kantor Kecamatan\"",
        );
        let allocations = self.allocations(table, header, PLACE, "group");

        let [download, upload] = &allocations;
        let group = match (&id, name, download.allocation(), upload.allocation()) {
            (Some((id, _)), Some(name), Some(download), Some(upload)) => Some(Group {
                id: id.clone(),
                name,
                download,
                upload,
            }),
            _ => None,
        };
        GroupDraft {
            header: header.clone(),
            id,
            label,
            allocations,
            group,
        }
    }
}
