// The post-incident report: detection, the affected instance, the evidence, every action and its
// result, the timings (first event -> detection -> containment -> resolution) and the questions
// the record leaves open. Pure functions of what the collector returned; no I/O.
#pragma once

#include <optional>
#include <string>

#include "tripline/v1/operator.pb.h"

namespace tripline::cli {

// Markdown, for a person and a ticket. Every string from the collector is made printable and
// kept out of Markdown's way (no raw control bytes, backticks or pipes from data).
std::string IncidentReportMarkdown(const tripline::v1::GetIncidentResponse& incident,
                                   const std::optional<tripline::v1::Agent>& agent);

// The same content as one JSON document (protobuf's JSON for Struct), for scripts.
std::string IncidentReportJson(const tripline::v1::GetIncidentResponse& incident,
                               const std::optional<tripline::v1::Agent>& agent);

}  // namespace tripline::cli
