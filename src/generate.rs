//! Placeholder until the generator lands.
pub struct GenerateSpec {
    pub users: usize,
    pub items: usize,
    pub events: usize,
    pub seed: u64,
    pub days: u32,
    pub start_ms: u64,
}
impl Default for GenerateSpec {
    fn default() -> Self {
        GenerateSpec {
            users: 1000,
            items: 500,
            events: 50_000,
            seed: 42,
            days: 14,
            start_ms: 1_767_225_600_000,
        }
    }
}
pub fn generate(
    _spec: &GenerateSpec,
    _events: &mut dyn std::io::Write,
    _catalog: Option<&mut dyn std::io::Write>,
    _truth: Option<&mut dyn std::io::Write>,
) -> std::io::Result<u64> {
    Err(std::io::Error::other("generator not built yet"))
}
