package email

import "passerelle/component/form"

// settingAcceptMail is the per-user setting that turns inbound mail on or
// off: when off, mail to the user's address is refused with 550 5.2.1.
const settingAcceptMail = "accept_mail"

// SettingsFields implements bridges.Settings.
func (b *Bridge) SettingsFields() []form.Field {
	return []form.Field{
		{Var: settingAcceptMail, Type: form.Boolean, Label: "Accept mail sent to my address",
			Desc: "When off, senders get a permanent refusal (550) and nothing reaches you.", Values: []string{"true"}},
	}
}
