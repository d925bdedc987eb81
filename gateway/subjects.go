package gateway

// RequestSubjects are the subjects the gateway answers, including micro's
// discovery: an embedded server exports exactly these from tock's private
// account to the application account, and nothing else of tock's.
func RequestSubjects() []string {
	return []string{SubjectSchedule, SubjectCancel, SubjectGet, SubjectStatus, "$SRV.>"}
}
