//! `OFPT_FLOW_MOD`: adding and deleting flows.

use bytes::{BufMut, BytesMut};

use super::super::action::{Instruction, decode_instructions, port};
use super::super::oxm::Match;
use super::super::wire::{DecodeError, Reader};
use super::{GROUP_ANY, NO_BUFFER_ID};

/// `ofp_flow_mod_command`.
pub mod flow_cmd {
    pub const ADD: u8 = 0;
    pub const MODIFY: u8 = 1;
    pub const MODIFY_STRICT: u8 = 2;
    pub const DELETE: u8 = 3;
    pub const DELETE_STRICT: u8 = 4;
}

/// OF1.5 `OFPT_FLOW_MOD`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FlowMod {
    pub cookie: u64,
    pub cookie_mask: u64,
    pub table_id: u8,
    pub command: u8,
    pub idle_timeout: u16,
    pub hard_timeout: u16,
    pub priority: u16,
    pub buffer_id: u32,
    pub out_port: u32,
    pub out_group: u32,
    pub flags: u16,
    pub importance: u16,
    pub fields: Match,
    pub instructions: Vec<Instruction>,
}

impl FlowMod {
    /// An `OFPFC_ADD` of one flow.
    pub fn add(
        table_id: u8,
        priority: u16,
        cookie: u64,
        fields: Match,
        instructions: Vec<Instruction>,
    ) -> Self {
        Self {
            cookie,
            cookie_mask: 0,
            table_id,
            command: flow_cmd::ADD,
            idle_timeout: 0,
            hard_timeout: 0,
            priority,
            buffer_id: NO_BUFFER_ID,
            out_port: port::ANY,
            out_group: GROUP_ANY,
            flags: 0,
            importance: 0,
            fields,
            instructions,
        }
    }

    /// `OFPFC_DELETE` of every flow in `table_id` ([`super::TABLE_ALL`] for all tables) whose
    /// cookie matches `cookie` under `cookie_mask`.
    pub fn delete_by_cookie(table_id: u8, cookie: u64, cookie_mask: u64) -> Self {
        Self {
            cookie,
            cookie_mask,
            table_id,
            command: flow_cmd::DELETE,
            idle_timeout: 0,
            hard_timeout: 0,
            priority: 0x8000,
            buffer_id: NO_BUFFER_ID,
            out_port: port::ANY,
            out_group: GROUP_ANY,
            flags: 0,
            importance: 0,
            fields: Match::new(),
            instructions: Vec::new(),
        }
    }

    pub(super) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let cookie = r.u64()?;
        let cookie_mask = r.u64()?;
        let table_id = r.u8()?;
        let command = r.u8()?;
        let idle_timeout = r.u16()?;
        let hard_timeout = r.u16()?;
        let priority = r.u16()?;
        let buffer_id = r.u32()?;
        let out_port = r.u32()?;
        let out_group = r.u32()?;
        let flags = r.u16()?;
        let importance = r.u16()?;
        let fields = Match::decode(r)?;
        let instructions = decode_instructions(r.rest())?;
        Ok(Self {
            cookie,
            cookie_mask,
            table_id,
            command,
            idle_timeout,
            hard_timeout,
            priority,
            buffer_id,
            out_port,
            out_group,
            flags,
            importance,
            fields,
            instructions,
        })
    }

    pub(super) fn encode(&self, buf: &mut BytesMut) {
        buf.put_u64(self.cookie);
        buf.put_u64(self.cookie_mask);
        buf.put_u8(self.table_id);
        buf.put_u8(self.command);
        buf.put_u16(self.idle_timeout);
        buf.put_u16(self.hard_timeout);
        buf.put_u16(self.priority);
        buf.put_u32(self.buffer_id);
        buf.put_u32(self.out_port);
        buf.put_u32(self.out_group);
        buf.put_u16(self.flags);
        buf.put_u16(self.importance);
        self.fields.encode(buf);
        for i in &self.instructions {
            i.encode(buf);
        }
    }
}
